"""Open-loop rollouts on held-out windows: the model and the baselines see exactly the same windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from teleworld.errors import TeleworldError
from train.dataset import EpisodeArrays
from train.model import WorldModel


@dataclass
class Rollouts:
    """Truth and predictions for W windows of K context + H imagined steps, frames (W, K+H, 3, S, S) in [0, 1]."""

    starts: np.ndarray  # (W,) first step of each window in the store
    context: int
    truth: np.ndarray
    model: np.ndarray  # context part = reconstructions, then imagination
    copy_last: np.ndarray


def pick_windows(data: EpisodeArrays, episodes: list[int], length: int, count: int, seed: int) -> np.ndarray:
    """``count`` window starts drawn with ``seed`` from the given episodes, spread over episodes."""
    candidates = data.windows(length, np.asarray(episodes, dtype=np.int64))
    if len(candidates) == 0:
        raise TeleworldError(f"no held-out episode has the {length} steps a rollout needs (context + horizon)")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))


@torch.no_grad()
def rollout(model: WorldModel, data: EpisodeArrays, starts: np.ndarray, context: int, horizon: int,
            device: torch.device | str = "cpu", batch_size: int = 16) -> Rollouts:
    """Observe ``context`` real frames, imagine ``horizon`` steps with the real actions, for every window."""
    length = context + horizon
    truths, preds = [], []
    for i in range(0, len(starts), batch_size):
        batch = data.batch(starts[i : i + batch_size], length, device)
        out = model.open_loop(batch["image"], batch["action"], context)
        preds.append(torch.cat([out["recon"], out["image"]], 1).clamp(0, 1).cpu().numpy())
        truths.append(batch["image"].cpu().numpy())
    truth = np.concatenate(truths)
    copy_last = truth.copy()
    copy_last[:, context:] = truth[:, context - 1 : context]
    return Rollouts(starts, context, truth, np.concatenate(preds), copy_last)
