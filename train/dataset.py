"""Episodes in RAM as model-ready arrays, and random windows drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recorder import EpisodeStore
from recorder.loader import step_rows
from recorder.schema import extra_names, image_key, proprio
from teleworld.errors import TeleworldError
from recorder.windows import episode_starts, make_windows


@dataclass
class DataSpec:
    """What a model trained on a dataset expects; stored in checkpoints and checked against new data."""

    scene: str
    camera: str
    image_size: int
    action_names: list[str]
    proprio_dim: int
    contact_dim: int

    @classmethod
    def from_store(cls, store: EpisodeStore, camera: str | None = None) -> "DataSpec":
        info = store.info
        camera = camera or info["cameras"][0]
        if camera not in info["cameras"]:
            raise TeleworldError(f"dataset has no camera {camera!r}; it has {', '.join(info['cameras'])}")
        h, w = info["image_size"]
        if h != w or h % 16:
            raise TeleworldError(f"the world model needs square frames with a side divisible by 16, got {h}x{w}")
        return cls(
            scene=info["scene"],
            camera=camera,
            image_size=int(h),
            action_names=list(info["action_spec"]["names"]),
            proprio_dim=int(info["nq"] + info["nv"]),
            contact_dim=len(info["contact_groups"]),
        )

    def check_compatible(self, other: "DataSpec") -> None:
        """Raise a one-line error naming the first field where a model's data and this data disagree."""
        for field in ("scene", "camera", "image_size", "action_names", "proprio_dim", "contact_dim"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                raise TeleworldError(f"model was trained on {field}={mine!r} but the data has {field}={theirs!r}")


class EpisodeArrays:
    """The arrays a world model needs, with episode boundaries: the per-step vectors in RAM, the frames in RAM when
    they fit in ``max_cache_bytes`` (default half the machine's memory) or read by chunk through an LRU cache
    (``cache``: auto, ram or chunks)."""

    def __init__(self, store: EpisodeStore, spec: DataSpec, cache: str = "auto", max_cache_bytes: int | None = None):
        n = store.num_steps
        if n == 0:
            raise TeleworldError(f"{store.path} holds no committed episodes")
        self.spec = spec
        self.episode_ends = store.episode_ends
        self.episode_begins = episode_starts(self.episode_ends)  # first step of each episode
        self.active = store.active_episodes()  # committed and not marked deleted: the only episodes used
        if len(self.active) == 0:
            raise TeleworldError(f"every episode of {store.path} is marked deleted; "
                                 "`teleworld data delete STORE EPISODE... --undo` restores them")
        split = store.edits["split"]
        self.stored_split = (
            {name: np.intersect1d(self.active, split[name]) for name in ("train", "val")} if split else None
        )
        # (N, H, W, 3) uint8: in RAM when they fit, else read by chunk (recorder.loader.step_rows)
        self.frames = step_rows(store, image_key(spec.camera), cache, max_cache_bytes)

        self.store = store
        rows = self._rows
        self.action = rows("action").astype(np.float32)
        self.proprio = proprio(rows("qpos"), rows("qvel"))
        self.position_dims = int(store.info["nq"])  # the leading proprio entries are positions (qpos)
        self.contact = rows("contact_summary").astype(np.float32)
        self.reward = rows("reward").astype(np.float32)  # of the state observed at step t
        self.goal: np.ndarray | None = None  # (N, D) per step, once load_goals() has run
        if not np.isfinite(self.action).all():
            raise TeleworldError(f"{store.path} has non-finite actions; run `teleworld data validate`")

    def _rows(self, key: str) -> np.ndarray:
        """Every step of data/``key``, straight from zarr, with a tail file's rows (recorder.store) put in."""
        n = self.store.num_steps
        return self.store.with_tail(f"data/{key}", slice(0, n), self.store.array(key)[:n])

    def step_extras(self, names: list[str]) -> np.ndarray:
        """The named step extras (the scene's own per-step arrays) of every step, flattened and concatenated in
        the order given, as float32 (N, total size)."""
        declared = extra_names(self.store.info)
        for name in names:
            if name not in declared:
                raise TeleworldError(f"{self.store.path} records no step extra {name!r}; it records "
                                     f"{', '.join(declared) or 'none'}")
        parts = [self._rows(name).reshape(self.store.num_steps, -1).astype(np.float32) for name in names]
        return np.concatenate(parts, 1) if parts else np.zeros((self.store.num_steps, 0), np.float32)

    def load_goals(self) -> None:
        """Read every active episode's recorded task goal (train/goals.py) so batches carry "goal" next to "reward"."""
        from train.goals import episode_goals

        per_episode = episode_goals(self.store, self.active)
        self.goal = np.zeros((len(self.reward), per_episode.shape[1]), np.float32)
        for episode, goal in zip(self.active, per_episode):
            self.goal[self.episode_begins[episode] : self.episode_ends[episode]] = goal

    def windows(self, length: int, episodes: np.ndarray | None = None) -> np.ndarray:
        """Starts of every window of ``length`` steps inside one active episode (of ``episodes`` when given).

        Episodes marked deleted never yield a window, even when named (a resumed run's list may predate a mark)."""
        chosen = self.active if episodes is None else np.intersect1d(np.asarray(episodes, np.int64), self.active)
        return make_windows(self.episode_ends, length, chosen)

    def gather(self, starts: np.ndarray, length: int, references: np.ndarray | None = None,
               rollout_steps: np.ndarray | None = None, action_length: int | None = None,
               keys: set[str] | None = None) -> dict[str, torch.Tensor]:
        """Windows [start, start+length) as CPU tensors (B, T, ...); frames stay uint8 (B, T, H, W, 3).

        ``references``: one step per window whose frame comes along as "reference" (B, H, W, 3).
        ``rollout_steps`` (B, F): window steps, possibly past ``length``, whose frames come along as
        "rollout_image" (B, F, H, W, 3) and "rollout_step"; ``action_length``: actions beyond the window, and the
        proprio, contacts and rewards of all those steps as "span_proprio" (B, action_length, P), "span_contact" and
        "span_reward" (the heads' targets on the long rollout). ``keys``: only these of the per-step ones (proprio,
        contact, reward, goal, span_*; image and action always come), all when not given."""
        starts = np.asarray(starts)
        idx = starts[:, None] + np.arange(length)[None]
        out = {
            "image": torch.from_numpy(self.frames[idx]),
            "action": torch.from_numpy(self.action[starts[:, None] + np.arange(action_length or length)[None]]),
        }
        per_step = {"proprio": (self.proprio, idx), "contact": (self.contact, idx), "reward": (self.reward, idx)}
        if self.goal is not None:
            per_step["goal"] = (self.goal, starts)  # (B, D): constant within an episode
        if action_length is not None:
            span = starts[:, None] + np.arange(action_length)[None]
            per_step.update({"span_proprio": (self.proprio, span), "span_contact": (self.contact, span),
                             "span_reward": (self.reward, span)})
        for key, (array, index) in per_step.items():
            if keys is None or key in keys:
                out[key] = torch.from_numpy(array[index])
        if references is not None:
            out["reference"] = torch.from_numpy(self.frames[np.asarray(references)])
        if rollout_steps is not None:
            out["rollout_image"] = torch.from_numpy(self.frames[starts[:, None] + rollout_steps])
            out["rollout_step"] = torch.from_numpy(np.asarray(rollout_steps, dtype=np.int64))
        return out

    def proprio_stats(self, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-dimension mean and std (P,) of the proprio over every step of ``episodes`` (the training split), and
        which entries are positions (P,) bool: those a model predicts as changes since an observed step."""
        values = self.proprio[self.steps_of(episodes)].astype(np.float64)
        positions = np.arange(values.shape[1]) < self.position_dims
        return values.mean(0).astype(np.float32), values.std(0).astype(np.float32), positions

    def reward_stats(self, episodes: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        """Mean and std of the reward over every step of ``episodes``, and of their goals (D,) (after load_goals)."""
        steps = self.steps_of(episodes)
        reward = self.reward[steps].astype(np.float64)
        goal = (self.goal if self.goal is not None else np.zeros((len(self.reward), 0)))[steps].astype(np.float64)
        return float(reward.mean()), float(reward.std()), goal.mean(0).astype(np.float32), goal.std(0).astype(np.float32)

    def steps_of(self, episodes: np.ndarray | list[int]) -> np.ndarray:
        """Every step index of ``episodes``, in order."""
        episodes = np.asarray(episodes, dtype=np.int64)
        return np.concatenate([np.arange(self.episode_begins[e], self.episode_ends[e]) for e in episodes])

    def random_steps_of_episodes(self, steps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each step, a uniformly drawn step of the same episode."""
        episode = np.searchsorted(self.episode_ends, steps, side="right")
        return rng.integers(self.episode_begins[episode], self.episode_ends[episode])

    def batch(self, starts: np.ndarray, length: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Gather windows and move them to ``device`` as model inputs (images float in [0, 1], (B, T, 3, H, W))."""
        return to_model_inputs(self.gather(starts, length), device)


def to_model_inputs(raw: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move a gathered batch to ``device``; uint8 frames become float (B, T, 3, H, W) in [0, 1] there."""
    out = {k: v.to(device, non_blocking=True) for k, v in raw.items()}
    for key in ("image", "reference", "rollout_image"):  # (..., H, W, 3) uint8 -> (..., 3, H, W) float
        if key in out:
            out[key] = out[key].movedim(-1, -3).float().div_(255.0)
    return out
