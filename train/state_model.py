"""A state-space world model: an MLP that steps the simulator's state under an action, and a reward head on it.

The simple learned model that planning with the image world model is judged against (PETS and TD-MPC on state
inputs, in their simplest form): it sees what the simulator's state holds, not the camera, so it tells how much of
a planner's gap comes from learning from pixels. Its state is concat(qpos, qvel) followed by the scene's recorded
step extras (``extras``: all of them by default; the arm records its hand's pose and its controller's joint
targets). ``teleworld train --config state`` fits it (train_state_model), ``teleworld plan --model RUN`` plans with
it (replay/planning.py's StateScorer). The state is standardised by the training episodes' statistics; a step
predicts the change of the state, scaled by the spread of one step's change; training unrolls ``unroll`` steps open
loop with the real actions, so the model learns to correct its own drift. Trained with ``observe="frames"`` it
also learns to read its state from the camera (train/state_encoder.py), and plans from frames alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recorder.schema import extra_names
from recorder.windows import split_episodes
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar
from train.checkpoint import read_checkpoint, write_checkpoint
from train.dataset import DataSpec, EpisodeArrays
from train.state_encoder import (StateEncoder, canonical_state, frame_batch, mlp, orientation_layout,
                                 previous_steps, wrapped_difference)

KIND = "state"


@dataclass
class StateModelConfig:
    """Sizes of the state model; ``state_dim``/``action_dim``/``goal_dim``/``extras`` come from the data."""

    state_dim: int  # nq + nv + the extras' sizes
    action_dim: int
    goal_dim: int = 0
    extras: list[str] = field(default_factory=list)  # step extras appended to concat(qpos, qvel), in this order
    hidden: int = 256
    layers: int = 3
    reward_layers: int = 2  # hidden layers of the reward head
    observe: str = "state"  # what planning observes: the simulator's "state", or camera "frames" read by an encoder
    keypoints: int = 16  # the encoder's heat maps, with observe="frames"
    quaternions: list[int] = field(default_factory=list)  # where orientation quaternions begin (signed w >= 0)
    angles: list[int] = field(default_factory=list)  # unlimited hinges' angles (wrapped into [-pi, pi))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StateTrainSettings:
    """How a state model trains: ``steps`` (an upper bound when ``minutes`` is set), batches of ``batch_size``
    windows of ``unroll`` + 1 steps."""

    steps: int = 5000
    minutes: float = 0.0
    batch_size: int = 512
    unroll: int = 8
    lr: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 0
    extras: str | list[str] = "all"  # the step extras in the state: all, none, or names (a list or "a,b")
    reward_layers: int = StateModelConfig.reward_layers  # 2 planned push and the arm better than 1
    reward_weight: float = 1.0  # the reward head's loss next to the state's
    observe: str = StateModelConfig.observe  # "frames": also train an encoder from the camera to the state
    encoder_batch: int = 64  # frame pairs per encoder step (one with every dynamics step)

    def pick_extras(self, recorded: list[str]) -> list[str]:
        """The step extras to put in the state, out of those a store ``recorded``."""
        if self.extras in ("all", "none"):
            return list(recorded) if self.extras == "all" else []
        names = self.extras.split(",") if isinstance(self.extras, str) else self.extras
        return [name.strip() for name in names if name.strip()]


class StateModel(nn.Module):
    """``step(state, action)`` -> next state; ``imagine(state, actions)`` -> the states after each action;
    ``reward(states, goal)`` -> the reward of each state, in the recorded units."""

    def __init__(self, cfg: StateModelConfig):
        super().__init__()
        self.cfg = cfg
        self.dynamics = mlp(cfg.state_dim + cfg.action_dim, cfg.hidden, cfg.state_dim, cfg.layers)
        self.reward_head = mlp(cfg.state_dim + cfg.goal_dim, cfg.hidden, 1, cfg.reward_layers)
        self.encoder = StateEncoder(cfg.state_dim, cfg.keypoints) if cfg.observe == "frames" else None
        for name, size in (("mean", cfg.state_dim), ("std", cfg.state_dim), ("delta_std", cfg.state_dim),
                           ("goal_mean", cfg.goal_dim), ("goal_std", cfg.goal_dim)):
            self.register_buffer(name, torch.ones(size) if "std" in name else torch.zeros(size))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    @torch.no_grad()
    def set_stats(self, state: np.ndarray, delta: np.ndarray, reward: np.ndarray, goal: np.ndarray) -> None:
        """Standardise by the training steps' states (N, P), one step's change of them (M, P), rewards (N,), goals."""
        self.mean.copy_(torch.from_numpy(state.mean(0)))
        self.std.copy_(torch.from_numpy(state.std(0)).clamp_min(1e-3))
        self.delta_std.copy_(torch.from_numpy(delta.std(0)).clamp_min(1e-5))
        self.reward_mean.fill_(float(reward.mean()))
        self.reward_std.fill_(max(float(reward.std()), 1e-6))
        if self.cfg.goal_dim:
            self.goal_mean.copy_(torch.from_numpy(goal.mean(0)))
            self.goal_std.copy_(torch.from_numpy(goal.std(0)).clamp_min(1e-6))

    def normalised(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.mean) / self.std

    def error(self, state: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Squared standardised error of ``state`` against ``truth``, angles compared a turn apart at most."""
        return (wrapped_difference(state, truth, self.cfg.angles) / self.std) ** 2

    def estimate(self, frame: torch.Tensor, previous: torch.Tensor, canonical: bool = True) -> torch.Tensor:
        """The state (N, P), native units, that the encoder reads from a frame and the one before it (N, 3, S, S)
        (``canonical``: with its quaternions signed and its angles wrapped, as the model's states are)."""
        state = self.encoder(frame, previous) * self.std + self.mean
        return canonical_state(state, self.cfg.quaternions, self.cfg.angles) if canonical else state

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """state (N, P) in native units, action (N, A) -> the state after the action (N, P)."""
        return state + self.dynamics(torch.cat([self.normalised(state), action], -1)) * self.delta_std

    def imagine(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """state (N, P), actions (N, H, A) -> the states after each action (N, H, P), open loop."""
        states = []
        for h in range(actions.shape[1]):
            state = self.step(state, actions[:, h])
            states.append(state)
        return torch.stack(states, 1)

    def reward(self, states: torch.Tensor, goal: torch.Tensor | None = None, standardised: bool = False
               ) -> torch.Tensor:
        """states (..., P), goal (D,) or (..., D) -> the predicted reward (...); imagined states are first read
        as a camera would (canonical_state: an angle stepped past pi is wrapped back)."""
        inputs = self.normalised(canonical_state(states, self.cfg.quaternions, self.cfg.angles))
        if self.cfg.goal_dim:
            if goal is None:
                raise ValueError(f"this reward head needs the task goal ({self.cfg.goal_dim} values)")
            goal = (goal.to(states.dtype) - self.goal_mean) / self.goal_std
            inputs = torch.cat([inputs, goal.expand(*states.shape[:-1], -1)], -1)
        raw = self.reward_head(inputs)[..., 0]
        return raw if standardised else raw * self.reward_std + self.reward_mean


class Windows:
    """Windows of ``length`` steps of a set of episodes, as tensors of states, actions, rewards and goals."""

    def __init__(self, data: EpisodeArrays, episodes: np.ndarray, length: int, state: np.ndarray):
        self.starts = data.windows(length, episodes)
        self.length = length
        self.state = torch.from_numpy(state)  # (N, P) float32, shared with the caller (no copy)
        self.action = torch.from_numpy(data.action)
        self.reward = torch.from_numpy(data.reward)
        self.goal = torch.from_numpy(data.goal)  # after data.load_goals()

    def batch(self, starts: np.ndarray) -> dict[str, torch.Tensor]:
        index = torch.from_numpy(starts)[:, None] + torch.arange(self.length)  # (B, L)
        return {"state": self.state[index], "action": self.action[index], "reward": self.reward[index],
                "goal": self.goal[index[:, 0]]}


def losses(model: StateModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The unrolled state error (standardised, mean over steps and entries), the reward head's error on the real
    states (standardised), and copy-last's state error on the same windows (not trained: the baseline)."""
    state, actions = batch["state"], batch["action"]
    imagined = model.imagine(state[:, 0], actions[:, :-1])
    truth = state[:, 1:]
    error = model.error(imagined, truth).mean()
    copy = model.error(state[:, :1], truth).mean()
    target = (batch["reward"] - model.reward_mean) / model.reward_std
    reward = ((model.reward(state, batch["goal"][:, None], standardised=True) - target) ** 2).mean()
    return {"state": error, "reward": reward, "copy_last": copy.detach()}


class FramePairs:
    """The encoder's training pairs: a step's frame and the one before it, with the step's state."""

    def __init__(self, data: EpisodeArrays, episodes: np.ndarray, state: np.ndarray):
        self.frames = data.frames
        self.steps = data.steps_of(episodes)
        self.previous = previous_steps(self.steps, data.episode_begins, data.episode_ends)
        self.state = torch.from_numpy(state[self.steps])

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (frame_batch(self.frames, self.steps[rows]), frame_batch(self.frames, self.previous[rows]),
                self.state[rows])

    def error(self, model: StateModel, rows: np.ndarray) -> torch.Tensor:
        """Mean squared error (standardised) of the encoder's reading on ``rows``: the training mean scores about 1."""
        frame, previous, truth = self.batch(rows)
        return model.error(model.estimate(frame, previous, canonical=False), truth).mean()


def train_state_model(data: EpisodeArrays, out_dir: str | Path, settings: StateTrainSettings,
                      show_progress: bool = True) -> dict:
    """Fit a StateModel on the episodes of ``data`` (split by whole episode), write ``out_dir``/checkpoint.pt and
    return {"checkpoint", "steps", "seconds", "validation": {"state", "copy_last", "reward"[, "encoder"]}}.
    With ``observe="frames"`` every step also trains the encoder on a batch of frame pairs."""
    if settings.observe not in ("state", "frames"):
        raise TeleworldError(f"observe must be state or frames, got {settings.observe!r}")
    if settings.encoder_batch < 1:
        raise TeleworldError(f"encoder_batch must be at least 1, got {settings.encoder_batch}")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    if data.stored_split is not None:
        train_eps, val_eps = data.stored_split["train"], data.stored_split["val"]
    else:
        train, val = split_episodes(len(data.active), settings.val_fraction, settings.seed)
        train_eps, val_eps = data.active[train], data.active[val]
    data.load_goals()
    extras = settings.pick_extras(extra_names(data.store.info))
    # a camera reads orientations only up to their symmetries; the simulator's state is read as it is
    quaternions, angles = orientation_layout(data.store.info) if settings.observe == "frames" else ([], [])
    state = data.proprio if not extras else np.concatenate([data.proprio, data.step_extras(extras)], 1)
    state = canonical_state(state, quaternions, angles)
    length = settings.unroll + 1
    train_windows, val_windows = Windows(data, train_eps, length, state), Windows(data, val_eps, length, state)
    if len(train_windows.starts) == 0:
        raise TeleworldError(f"no training episode has {length} steps; record longer episodes or lower --set unroll")
    steps = data.steps_of(train_eps)
    within = np.concatenate([np.arange(data.episode_begins[e], data.episode_ends[e] - 1) for e in train_eps])
    cfg = StateModelConfig(state.shape[1], len(data.spec.action_names), data.goal.shape[1], extras,
                           reward_layers=settings.reward_layers, observe=settings.observe, quaternions=quaternions,
                           angles=angles)
    model = StateModel(cfg)
    delta = wrapped_difference(state[within + 1], state[within], angles)
    model.set_stats(state[steps], delta, data.reward[steps], data.goal[steps])
    encoder = model.encoder
    dynamics = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    optimizer = torch.optim.Adam(dynamics, lr=settings.lr)
    if encoder is not None:
        pairs = FramePairs(data, train_eps, state)
        encoder_optimizer = torch.optim.Adam(encoder.parameters(), lr=settings.lr)
    began, done = time.perf_counter(), 0
    budget = f", at most {settings.minutes:g} min" if settings.minutes else ""
    with progress_bar(show_progress) as progress:
        task = progress.add_task(f"train state model{budget}", total=settings.steps, status="", unit="steps")
        while done < settings.steps and not (settings.minutes and time.perf_counter() - began > settings.minutes * 60):
            terms = losses(model, train_windows.batch(rng.choice(train_windows.starts, settings.batch_size)))
            optimizer.zero_grad(set_to_none=True)
            (terms["state"] + settings.reward_weight * terms["reward"]).backward()
            optimizer.step()
            status = (f"state {terms['state'].item():.3f} (copy-last {terms['copy_last'].item():.3f}) "
                      f"reward {terms['reward'].item():.3f}")
            if encoder is not None:
                error = pairs.error(model, rng.integers(0, len(pairs.steps), settings.encoder_batch))
                encoder_optimizer.zero_grad(set_to_none=True)
                error.backward()
                encoder_optimizer.step()
                status += f" encoder {error.item():.4f}"
            done += 1
            progress.update(task, advance=1, status=status)
        progress.update(task, total=done)
    validation = None
    if len(val_windows.starts):
        with torch.no_grad():
            picked = rng.choice(val_windows.starts, min(4096, len(val_windows.starts)), replace=False)
            validation = {k: round(v.item(), 5) for k, v in losses(model, val_windows.batch(picked)).items()}
            if encoder is not None:
                val_pairs = FramePairs(data, val_eps, state)
                rows = rng.choice(len(val_pairs.steps), min(2048, len(val_pairs.steps)), replace=False)
                errors = [val_pairs.error(model, part).item() * len(part) for part in np.array_split(rows, 8)]
                validation["encoder"] = round(sum(errors) / len(rows), 5)
    seconds = time.perf_counter() - began
    path = write_checkpoint(Path(out_dir) / "checkpoint.pt", {
        "kind": KIND, "config": cfg.to_dict(), "settings": asdict(settings), "data_spec": vars(data.spec).copy(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "step": done,
        "train_episodes": train_eps.tolist(), "val_episodes": val_eps.tolist(), "validation": validation,
        "seconds": seconds})
    return {"checkpoint": str(path), "steps": done, "seconds": seconds, "validation": validation}


def load_state_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[StateModel, DataSpec, dict]:
    """A state model from its checkpoint: (model in eval mode, its data spec, the raw dict)."""
    ckpt = read_checkpoint(path)
    if ckpt.get("kind") != KIND:
        raise TeleworldError(f"{path} is an image world model, not a state model")
    model = StateModel(StateModelConfig(**_current_config(ckpt["config"])))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), DataSpec(**ckpt["data_spec"]), ckpt



def _current_config(config: dict) -> dict:
    """A saved config in today's names: runs from before the step extras named the state ``proprio_dim`` and had a
    one-layer reward head."""
    if "proprio_dim" not in config:
        return config
    renamed = {k: v for k, v in config.items() if k != "proprio_dim"} | {"state_dim": config["proprio_dim"]}
    return {"reward_layers": 1, **renamed}
