"""The contact head's operating point: per group, the probability above which imagined contact is called.

A touch is a rare event (the pusher touches the box on a few % of steps), so an imagined probability rarely passes
0.5 and a 0.5 cut calls almost no contact. At the end of training the cut with the best F1 on the imagined steps of
windows of the training episodes is chosen per group and saved in the checkpoint (``contact_thresholds``); replay,
dream and plan call contacts with it.
"""

from __future__ import annotations

import numpy as np
import torch

from train.dataset import EpisodeArrays
from train.model import WorldModel

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # contact probabilities tried
CALIBRATION_WINDOWS = 64  # training windows they are tried on
CONTEXT, HORIZON = 5, 50  # replay's protocol: K observed frames, then H imagined steps


def calibrate(model: WorldModel, data: EpisodeArrays, episodes: np.ndarray, seed: int = 0,
              device: torch.device | str = "cpu") -> list[float] | None:
    """contact_thresholds on CALIBRATION_WINDOWS windows of ``episodes`` (replay's K and H, H shortened to fit the
    episodes); None without a contact head or without a window that fits."""
    if model.contact_head is None:
        return None
    lengths = data.episode_ends[episodes] - data.episode_begins[episodes]
    horizon = int(min(HORIZON, lengths.max() - CONTEXT)) if len(lengths) else 0
    windows = data.windows(CONTEXT + horizon, episodes) if horizon >= 1 else np.zeros(0, np.int64)
    if len(windows) == 0:
        return None
    starts = np.random.default_rng(seed).choice(windows, min(CALIBRATION_WINDOWS, len(windows)), replace=False)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):  # the run's random stream (saved for resume) stays untouched
            return contact_thresholds(model, data, np.sort(starts), CONTEXT, horizon, device).tolist()
    finally:
        model.train(was_training)


@torch.no_grad()
def contact_thresholds(model: WorldModel, data: EpisodeArrays, starts: np.ndarray, context: int, horizon: int,
                       device: torch.device | str = "cpu", batch_size: int = 32) -> np.ndarray:
    """Per contact group, the one of THRESHOLD_GRID with the best F1 on the imagined steps of the windows
    ``starts`` (real actions, open loop, ``context`` frames observed), (G,)."""
    probabilities, truths = [], []
    for i in range(0, len(starts), batch_size):
        batch = data.batch(starts[i : i + batch_size], context + horizon, device)
        dreamed = model.open_loop(batch["image"], batch["action"], context, horizon, decode=False,
                                  proprio=batch.get("proprio"))
        logits = model.heads(dreamed["feat"])["contact_logits"]
        probabilities.append(torch.sigmoid(logits.float()).cpu().numpy())
        truths.append(batch["contact"][:, context:].cpu().numpy() > 0.5)
    return best_thresholds(np.concatenate(probabilities), np.concatenate(truths))


def best_thresholds(probability: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per group (last axis), the lowest value of THRESHOLD_GRID whose calls ``probability > threshold`` have the
    best F1 against ``truth`` over all other axes; (G,) float32."""
    truth = np.asarray(truth, bool).reshape(-1, truth.shape[-1])
    calls = np.asarray(probability).reshape(-1, truth.shape[-1])[None] > THRESHOLD_GRID[:, None, None]
    tp, fp = (calls & truth).sum(1), (calls & ~truth).sum(1)  # (thresholds, G)
    fn = truth.sum(0) - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return THRESHOLD_GRID[f1.argmax(0)].astype(np.float32)
