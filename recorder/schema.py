"""The episode schema: every array of a teleworld store, in one place (documented in docs/schema.md).

Layout (time-major, episodes concatenated, like diffusion_policy's ReplayBuffer)::

    root attrs  teleworld = {schema_version, scene, control_rate, cameras, image_size, action_spec, ...}
    data/image_<camera>   (T, H, W, 3) uint8    camera frame observed at step t
    data/action           (T, A)       float32  action applied after observing step t (clipped, as applied)
    data/qpos             (T, nq)      float64
    data/qvel             (T, nv)      float64
    data/state            (T, nstate)  float64  mj_getState(mjSTATE_INTEGRATION): re-simulate from any step
    data/sim_time         (T,)         float64  s
    data/wall_time        (T,)         float64  s, time.monotonic() when the step was observed
    data/reward           (T,)         float32
    data/contact_count    (T,)         int32    rows of contacts/* that belong to step t
    data/contact_summary  (T, G)       uint8    1 if contact group g touches at step t
    data/<extra>          (T, ...)     any      a scene's own per-step arrays, declared in root attrs step_extras
                                                (schema >= 1.3; e.g. arm's ee_pose and joint_command)
    contacts/geom         (N, 2)       int32    ragged over steps: step t owns rows
    contacts/body         (N, 2)       int32        cumsum(contact_count)[t-1] .. cumsum(contact_count)[t]
    contacts/pos          (N, 3)       float32  m, world frame
    contacts/frame        (N, 9)       float32  contact frame (row 0 = normal)
    contacts/force        (N, 6)       float32  normal, 2 friction forces, 3 torques in the contact frame
    meta/episode_info     (E,)         str      JSON per episode (EPISODE_FIELDS); written at begin, rewritten at end
    meta/episode_ends     (E,)         int64    exclusive cumulative ends: the commit point, written last
    meta attrs  written = {steps, contact_rows}: how far data/ and contacts/ are durably written (salvage); from 1.4
                                                 updated when a writer closes the store
    .teleworld.tail       (schema >= 1.4, while a writer has the store open or after a crash) the open last chunk
                          of every unsharded array (all but frames), meta/ included, and the written mark: it
                          supersedes those chunk files and meta's attribute; a local commit is one atomic write of it
    root attrs  teleworld_episodes = {deleted: [...], split: {train, val, seed, val_fraction}}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = "1.4"
ROOT_KEY = "teleworld"
EPISODES_KEY = "teleworld_episodes"  # root attribute: deletion marks and the train/val split
WRITTEN_KEY = "written"  # attribute of meta/: steps and contact rows durably written, committed or not
TAIL_FILE = ".teleworld.tail"  # open blocks of the small arrays + the written mark, while a writer has the store
IMAGE_PREFIX = "image_"


@dataclass(frozen=True)
class ArraySpec:
    """Shape of one step (or one contact row) and its dtype."""

    shape: tuple[int, ...]
    dtype: str


def step_specs(info: dict) -> dict[str, ArraySpec]:
    """Per-step arrays under data/, derived from a scene's info dict."""
    h, w = info["image_size"]
    specs = {f"{IMAGE_PREFIX}{cam}": ArraySpec((h, w, 3), "uint8") for cam in info["cameras"]}
    specs.update(
        action=ArraySpec((len(info["action_spec"]["names"]),), "float32"),
        qpos=ArraySpec((info["nq"],), "float64"),
        qvel=ArraySpec((info["nv"],), "float64"),
        state=ArraySpec((info["nstate"],), "float64"),
        sim_time=ArraySpec((), "float64"),
        wall_time=ArraySpec((), "float64"),
        reward=ArraySpec((), "float32"),
        contact_count=ArraySpec((), "int32"),
        contact_summary=ArraySpec((len(info["contact_groups"]),), "uint8"),
    )
    for name, extra in info.get("step_extras", {}).items():
        if name in specs or name.startswith(IMAGE_PREFIX) or not name.isidentifier():
            raise ValueError(f"step extra {name!r} clashes with a standard array or is not a plain name")
        specs[name] = ArraySpec(tuple(extra["shape"]), str(np.dtype(extra["dtype"])))
    return specs


def extra_names(info: dict) -> list[str]:
    """The data/ keys a scene declared as its own per-step arrays (none in stores older than schema 1.3)."""
    return list(info.get("step_extras", {}))


CONTACT_SPECS: dict[str, ArraySpec] = {
    "geom": ArraySpec((2,), "int32"),
    "body": ArraySpec((2,), "int32"),
    "pos": ArraySpec((3,), "float32"),
    "frame": ArraySpec((9,), "float32"),
    "force": ArraySpec((6,), "float32"),
}

EPISODE_FIELDS: dict[str, str] = {
    "length": "steps in the episode",
    "seed": "seed of the scene reset (None if unknown)",
    "scene": "scene name",
    "device": "input device name",
    "operator": "who drove: a person's name or 'scripted'",
    "success": "True / False / None (unlabelled)",
    "goal": "the task's goal drawn at reset ([] if none): push's goal point, reacher's target, x/y in m",
    "start_time": "time.time() at begin(), s since the epoch",
    "overruns": "control periods the loop overran (as reported by the loop)",
    "timing": "from wall_time: dt_mean_ms, dt_p50_ms, dt_p99_ms, dt_max_ms, jitter_p99_ms, late_steps",
    "partial": "True when salvaged from a crash by `teleworld data repair --salvage`",
}

# root info that two stores must share to be merged (everything that fixes the meaning of an array)
SCHEMA_INFO_KEYS = ("scene", "control_rate", "cameras", "image_size", "action_spec", "contact_groups", "nq", "nv",
                    "nstate", "physics_timestep", "mjcf", "step_extras")

REQUIRED_INFO = ("scene", "control_rate", "cameras", "image_size", "action_spec", "nq", "nv", "nstate")


def qpos_orientations(model) -> dict[str, list[int]]:
    """Where a MuJoCo model's qpos holds orientations a camera reads only up to a symmetry (root info
    ``qpos_orientations``): "quaternions", the first entry of each free or ball joint's quaternion (q and -q are one
    orientation), and "angles", each unlimited hinge's angle (it looks the same a turn later)."""
    import mujoco

    quaternions, angles = [], []
    for joint in range(model.njnt):
        kind, address = model.jnt_type[joint], int(model.jnt_qposadr[joint])
        if kind == mujoco.mjtJoint.mjJNT_FREE:
            quaternions.append(address + 3)
        elif kind == mujoco.mjtJoint.mjJNT_BALL:
            quaternions.append(address)
        elif kind == mujoco.mjtJoint.mjJNT_HINGE and not model.jnt_limited[joint]:
            angles.append(address)
    return {"quaternions": quaternions, "angles": angles}


def parse_version(version: str) -> tuple[int, int]:
    """'1.0' -> (1, 0)."""
    major, minor = str(version).split(".")[:2]
    return int(major), int(minor)


def image_key(camera: str) -> str:
    """The data/ key holding a camera's frames."""
    return f"{IMAGE_PREFIX}{camera}"


def proprio(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """The proprioceptive vector a model sees: concat(qpos, qvel) as float32."""
    return np.concatenate([qpos, qvel], axis=-1).astype(np.float32)
