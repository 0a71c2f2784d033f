"""Reading the simulator's state from the camera, so that a state model plans from pixels alone.

A keypoint encoder in the manner of deep spatial autoencoders (Finn et al. 2016; replay/positions.py's detector
reads bodies the same way): a few convolutions draw ``keypoints`` heat maps of a frame, a spatial soft-argmax
reads the centre of each, and an MLP maps the current frame's keypoints and their motion since the previous frame
to the standardised state (positions, velocities and step extras). It is trained on the recorded frames against
the recorded states (``teleworld train --config state --set observe=frames``); at planning time it replaces the
simulator's state, which the planner then never reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recorder.schema import qpos_orientations
from teleworld.errors import TeleworldError

MOTION_SCALE = 10.0  # keypoints move a few hundredths of the frame per step: scale their motion near unit size


def mlp(inp: int, hidden: int, out: int, layers: int) -> nn.Sequential:
    """``layers`` hidden layers of SiLU units, then a linear output."""
    parts: list[nn.Module] = []
    for i in range(layers):
        parts += [nn.Linear(inp if i == 0 else hidden, hidden), nn.SiLU()]
    return nn.Sequential(*parts, nn.Linear(hidden, out))


def spatial_soft_argmax(maps: torch.Tensor) -> torch.Tensor:
    """Heat-map logits (N, K, S, S) -> (N, K, 2) the expected image coordinates (column, row) in [-1, 1] of each
    map's softmax over its cells (Levine et al.'s spatial softmax)."""
    n, k, s, _ = maps.shape
    weights = torch.softmax(maps.flatten(2), -1).view(n, k, s, s)
    grid = (torch.arange(s, device=maps.device, dtype=maps.dtype) + 0.5) / s * 2 - 1  # cell centres
    return torch.stack([(weights.sum(2) * grid).sum(-1), (weights.sum(3) * grid).sum(-1)], -1)


class StateEncoder(nn.Module):
    """(frame, previous frame), each (N, 3, S, S) in [0, 1] -> the standardised state (N, P)."""

    def __init__(self, state_dim: int, keypoints: int = 16, width: int = 32, hidden: int = 256):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, keypoints, 1),
        )
        self.head = mlp(4 * keypoints, hidden, state_dim, 2)

    def keypoints(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, K, 2) expected image coordinates (column, row) in [-1, 1] of each heat map."""
        return spatial_soft_argmax(self.features(frames * 2 - 1))

    def forward(self, frame: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        now, before = self.keypoints(torch.cat([frame, previous])).chunk(2)
        return self.head(torch.cat([now.flatten(1), MOTION_SCALE * (now - before).flatten(1)], 1))


def previous_steps(steps: np.ndarray, episode_begins: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """The step before each of ``steps`` in its episode; an episode's first step is its own previous one (as at
    a reset, when the planner has seen one frame)."""
    episode = np.searchsorted(episode_ends, steps, side="right")
    return np.where(steps > episode_begins[episode], steps - 1, steps)


def frame_batch(frames: np.ndarray, steps: np.ndarray) -> torch.Tensor:
    """(B, 3, S, S) float frames in [0, 1] of the store steps ``steps`` (frames: (N, S, S, 3) uint8)."""
    return torch.from_numpy(np.asarray(frames[steps])).permute(0, 3, 1, 2).float().div_(255.0)


def orientation_layout(info: dict) -> tuple[list[int], list[int]]:
    """Where a store's qpos holds orientations a camera reads only up to a symmetry: (the first entry of each
    quaternion, the entry of each unlimited hinge's angle), as its info records them (``qpos_orientations``), or,
    for a store recorded before it did, from its MJCF where that compiles alone."""
    import mujoco

    layout = info.get("qpos_orientations")
    if layout is None:
        try:
            layout = qpos_orientations(mujoco.MjModel.from_xml_string(info["mjcf"]))
        except ValueError as error:
            raise TeleworldError(
                f"this {info['scene']} store was recorded before stores described their joints, and its MJCF does "
                f"not compile alone ({str(error).splitlines()[0]}); record it again to read its state from frames"
            ) from None
    return list(layout["quaternions"]), list(layout["angles"])


def canonical_state(state: np.ndarray | torch.Tensor, quaternions: list[int], angles: list[int]
                    ) -> np.ndarray | torch.Tensor:
    """``state`` (..., P) as a camera can read it: each quaternion beginning at ``quaternions`` signed so that
    its w >= 0 (q and -q are one orientation), each angle at ``angles`` wrapped into [-pi, pi) (an unlimited
    hinge looks the same a turn later)."""
    if not quaternions and not angles:  # a state-observing model: nothing to read differently, nothing copied
        return state
    xp = np if isinstance(state, np.ndarray) else torch
    state = state.copy() if xp is np else state.clone()
    for start in quaternions:
        quat = state[..., start : start + 4]
        state[..., start : start + 4] = xp.where(quat[..., :1] < 0, -quat, quat)
    for index in angles:
        state[..., index] = wrap(state[..., index])
    return state


def wrapped_difference(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, angles: list[int]
                       ) -> np.ndarray | torch.Tensor:
    """a - b, with each angle at ``angles`` taken the short way round (into [-pi, pi))."""
    difference = a - b
    for index in angles:
        difference[..., index] = wrap(difference[..., index])
    return difference


def wrap(angle: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Angles (radians) into [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi
