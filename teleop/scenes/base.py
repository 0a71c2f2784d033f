"""The scene interface: a MuJoCo model, reset(seed), step(action) -> Observation.

Convention (also in docs/schema.md): at step t the frame, qpos, qvel and contacts are observed, then
``action[t]`` is applied for one control period, producing the observation of step t+1.
"""

from __future__ import annotations

import atexit
import os
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import mujoco
import numpy as np

from recorder.schema import qpos_orientations
from teleop.scenes.task import Task
from teleworld.errors import TeleworldError


@dataclass(frozen=True)
class ActionSpec:
    """Names and bounds of a scene's action vector (float32)."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.names)

    def clip(self, action: np.ndarray) -> np.ndarray:
        """Clip to bounds and cast to float32: the result is exactly what the scene applies."""
        return np.clip(np.asarray(action, dtype=np.float32), self.low, self.high).astype(np.float32)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "low": list(self.low), "high": list(self.high)}


@dataclass
class Contacts:
    """Every active contact of one step (ragged: n rows, n may be 0)."""

    geom: np.ndarray  # (n, 2) int32 geom ids
    body: np.ndarray  # (n, 2) int32 body ids
    pos: np.ndarray  # (n, 3) float32 world position, m
    frame: np.ndarray  # (n, 9) float32 contact frame, first row = normal
    force: np.ndarray  # (n, 6) float32 in the contact frame: normal, 2 friction, 3 torques, N / N·m

    def __len__(self) -> int:
        return len(self.geom)


@dataclass
class Observation:
    """What is observed at one step, before that step's action is applied."""

    frames: dict[str, np.ndarray]  # camera -> (H, W, 3) uint8
    qpos: np.ndarray  # (nq,) float64
    qvel: np.ndarray  # (nv,) float64
    state: np.ndarray  # (nstate,) float64, mj_getState(mjSTATE_INTEGRATION)
    sim_time: float
    reward: float
    contacts: Contacts
    contact_summary: np.ndarray  # (len(contact_groups),) uint8, 1 if that pair touches
    info: dict = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # the scene's declared per-step arrays (step_extras)


STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
MAX_CONTROL_RATE = 100.0  # Hz
_LIVE_SCENES: weakref.WeakSet = weakref.WeakSet()


def _close_renderers() -> None:
    """Free GL contexts before the GL backend's own exit handler tears the display down."""
    for scene in list(_LIVE_SCENES):
        scene.close()


class Scene(ABC):
    """A MuJoCo scene driven at a fixed control rate: the physics (model, data, actions, rendering, contacts,
    state). What an episode on it means is its ``task`` (teleop/scenes/task.py), an instance of ``task_class``;
    ``reward``/``success``/``goal`` ask it about the current state."""

    name: str = ""
    control_rate: float = 20.0  # Hz
    default_cameras: tuple[str, ...] = ()
    # pairs of body-name groups whose contact is summarised densely per step, e.g. ("pusher", "box")
    contact_groups: tuple[tuple[str, str], ...] = ()
    # bodies whose position replay scores on imagined frames (their centre of mass, world frame, m), e.g. ("box",)
    tracked_bodies: tuple[str, ...] = ()
    # default operator bindings (see teleop/bindings.py): (action, key for -1, key for +1) ...
    key_bindings: tuple[tuple[str, str, str], ...] = ()
    # ... and (action, gamepad axis spec such as "leftx", "-lefty" or "triggerright-triggerleft")
    pad_bindings: tuple[tuple[str, str], ...] = ()
    task_class: type[Task]

    def __init__(
        self,
        image_size: tuple[int, int] = (64, 64),
        cameras: tuple[str, ...] | None = None,
        control_rate: float | None = None,
    ):
        """``control_rate`` (Hz) overrides the scene's default: at most 100, a whole number of physics steps."""
        if control_rate is not None:
            if not 0 < control_rate <= MAX_CONTROL_RATE:
                raise TeleworldError(f"control rate must be in (0, {MAX_CONTROL_RATE:g}] Hz, got {control_rate:g}")
            self.control_rate = float(control_rate)
        self.model, self.data = self.build()
        self.image_size = tuple(image_size)
        self.cameras = tuple(cameras or self.default_cameras)
        for cam in self.cameras:
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise ValueError(f"scene {self.name!r} has no camera {cam!r}")
        self.model.vis.quality.shadowsize = 0
        self.model.vis.quality.offsamples = 0
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}  # one per image size
        self._n_substeps = max(1, round(1.0 / (self.control_rate * self.model.opt.timestep)))
        if abs(self._n_substeps * self.model.opt.timestep * self.control_rate - 1.0) > 0.01:
            raise TeleworldError(
                f"scene {self.name!r} steps physics every {self.model.opt.timestep * 1e3:g} ms: a control rate of "
                f"{self.control_rate:g} Hz is not a whole number of physics steps"
            )
        self._group_bodies = [
            (self._body_ids(a), self._body_ids(b)) for a, b in self.contact_groups
        ]
        self.task = self.task_class()

    # ----- what subclasses define -----
    @abstractmethod
    def build(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """Return the model and a fresh data for this scene."""

    @abstractmethod
    def apply_action(self, action: np.ndarray) -> None:
        """Write an already clipped action into self.data.ctrl."""

    @property
    @abstractmethod
    def action_spec(self) -> ActionSpec:
        """The scene's action names and bounds; valid before reset."""

    @abstractmethod
    def mjcf(self) -> str:
        """The scene's MJCF text, stored with every dataset."""

    def vary(self, rng: np.random.Generator) -> None:
        """Domain randomization: redraw the model's own parameters (sizes, masses, colours) at reset, before the
        task draws the initial state; nothing by default."""

    # ----- what the task says about the current state -----
    def reward(self) -> float:
        """The task's reward for the current state."""
        return self.task.reward(self)

    def success(self) -> bool | None:
        """Whether the task is done (None for a task without a success label)."""
        return self.task.success(self)

    def goal(self) -> np.ndarray:
        """The episode's goal (Task.goal): (D,) float64, empty for a task without one."""
        return self.task.goal(self)

    def extras(self) -> dict[str, np.ndarray]:
        """Scene-specific arrays recorded with every step, one per name declared in ``info()["step_extras"]``
        (shape, dtype, names, doc); none by default."""
        return {}

    def hud_lines(self) -> list[str]:
        """Scene-specific lines for the operator's HUD (e.g. the end-effector pose); none by default."""
        return []

    # ----- the public verbs -----
    def reset(self, seed: int | None = None) -> Observation:
        """Start a new episode from a state drawn with ``seed``."""
        mujoco.mj_resetData(self.model, self.data)
        self.rng = np.random.default_rng(seed)
        self.vary(self.rng)
        self.task.initialize(self, self.rng)
        mujoco.mj_forward(self.model, self.data)
        return self.observe()

    def step(self, action: np.ndarray) -> Observation:
        """Apply ``action`` for one control period and return the next observation."""
        self.advance(action)
        return self.observe()

    def advance(self, action: np.ndarray) -> None:
        """Apply ``action`` for one control period, nothing observed or rendered (a planner's simulated future)."""
        self.apply_action(self.action_spec.clip(action))
        mujoco.mj_step(self.model, self.data, nstep=self._n_substeps)

    def observe(self) -> Observation:
        """Read the current state, contacts and camera frames."""
        contacts = self.contacts()
        return Observation(
            frames={cam: self.render(cam) for cam in self.cameras},
            qpos=self.data.qpos.copy(),
            qvel=self.data.qvel.copy(),
            state=self.get_state(),
            sim_time=float(self.data.time),
            reward=float(self.reward()),
            contacts=contacts,
            contact_summary=self.summarise(contacts),
            extras=self.extras(),
        )

    def render(self, camera: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """Render one camera: (H, W, 3) uint8 at the scene's image size (what is recorded), or at ``size``
        (e.g. a window's live view, drawn sharp instead of the recorded frame scaled up)."""
        size = tuple(size or self.image_size)
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = self._new_renderer(size)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render().copy()

    def _new_renderer(self, size: tuple[int, int]) -> mujoco.Renderer:
        vis = self.model.vis.global_
        vis.offheight, vis.offwidth = max(vis.offheight, size[0]), max(vis.offwidth, size[1])
        try:
            renderer = mujoco.Renderer(self.model, *size)
        except Exception as exc:  # no usable GL for the chosen backend
            backend = os.environ.get("MUJOCO_GL", "glfw")
            detail = " ".join(str(exc).split())[:200]
            raise TeleworldError(f"MuJoCo cannot render with MUJOCO_GL={backend} ({type(exc).__name__}: {detail}); "
                                 "install libegl1 and Mesa, or set MUJOCO_GL=osmesa or glfw") from None
        if not _LIVE_SCENES:  # registered after the GL backend's handler, so it runs before it
            atexit.unregister(_close_renderers)
            atexit.register(_close_renderers)
        _LIVE_SCENES.add(self)
        return renderer

    def render_pose(self, qpos: np.ndarray, camera: str) -> np.ndarray:
        """What ``camera`` would see with the bodies at ``qpos`` (a state a model imagines, say), its quaternions
        normalised; the scene's own state is restored afterwards."""
        saved = self.get_state()
        try:
            self.data.qpos[:] = qpos
            mujoco.mj_normalizeQuat(self.model, self.data.qpos)
            mujoco.mj_forward(self.model, self.data)
            return self.render(camera)
        finally:
            self.set_state(saved)

    def get_state(self) -> np.ndarray:
        """The full integration state, enough to re-simulate from this step."""
        state = np.empty(mujoco.mj_stateSize(self.model, STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, state, STATE_SPEC)
        return state

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state saved with get_state (recomputes derived quantities)."""
        mujoco.mj_setState(self.model, self.data, np.asarray(state, dtype=np.float64), STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)

    def contacts(self) -> Contacts:
        """Every active contact with its force in the contact frame."""
        n = self.data.ncon
        con = self.data.contact
        force = np.zeros((n, 6))
        for i in range(n):
            mujoco.mj_contactForce(self.model, self.data, i, force[i])
        geom = np.asarray(con.geom[:n], dtype=np.int32).reshape(n, 2)
        return Contacts(
            geom=geom,
            body=self.model.geom_bodyid[geom].astype(np.int32).reshape(n, 2),
            pos=np.asarray(con.pos[:n], dtype=np.float32).reshape(n, 3),
            frame=np.asarray(con.frame[:n], dtype=np.float32).reshape(n, 9),
            force=force.astype(np.float32),
        )

    def summarise(self, contacts: Contacts) -> np.ndarray:
        """Dense per-step flags: 1 where a contact group's bodies touch."""
        out = np.zeros(len(self._group_bodies), dtype=np.uint8)
        for g, (a, b) in enumerate(self._group_bodies):
            b0, b1 = contacts.body[:, 0], contacts.body[:, 1]
            hit = (np.isin(b0, a) & np.isin(b1, b)) | (np.isin(b0, b) & np.isin(b1, a))
            out[g] = hit.any()
        return out

    def info(self) -> dict:
        """Dataset-level description stored in the recorder's root attributes."""
        return {
            "scene": self.name,
            "control_rate": self.control_rate,
            "cameras": list(self.cameras),
            "image_size": list(self.image_size),
            "action_spec": self.action_spec.to_dict(),
            "contact_groups": [list(g) for g in self.contact_groups],
            "nq": int(self.model.nq),
            "nv": int(self.model.nv),
            "nstate": int(mujoco.mj_stateSize(self.model, STATE_SPEC)),
            "physics_timestep": float(self.model.opt.timestep),
            "mujoco_version": mujoco.__version__,
            "mjcf": self.mjcf(),
            "qpos_orientations": qpos_orientations(self.model),
        }

    def body_position(self, body: str) -> np.ndarray:
        """World position of a named body."""
        return self.data.body(body).xpos.copy()

    def close(self) -> None:
        """Free the renderers."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def _body_ids(self, name: str) -> list[int]:
        bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        if bid < 0:
            raise ValueError(f"scene {self.name!r} has no body {name!r}")
        return [bid]
