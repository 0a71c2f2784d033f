"""Open-loop rollouts of held-out windows, and the baselines on exactly the same windows.

A window is K context steps then H imagined steps. Every method predicts the H imagined steps:

- ``model``: observe the K context frames with the real actions, then imagine H steps with the real actions (a
  composite decoder paints them over the last context frame; positions are the proprio observed at the last
  context step plus the change the proprio head predicts since it, velocities the head's own);
- ``model_unblended`` (a model with ``blend`` only): the same imagined states decoded without the blend toward the
  last context frame, i.e. the world model's own frames;
- ``shuffled_actions``: the same context posterior, imagined with shuffled actions (pooled over all windows and
  imagined steps, permuted with the seed): ΔPSNR = model - shuffled measures how much the model uses its actions;
- ``copy_last``: the last context frame, proprio and contacts held (zero velocity);
- ``constant_velocity`` (proprio only): positions (qpos) extrapolated with their last change between context
  steps, velocities (qvel) held;
- ``median_frame`` (images only): the per-pixel median of the training frames, i.e. the scene with nothing where
  things move, for every step: a model that only beats copy-last by this much wins by erasing, not by predicting;
- ``reconstruction``: the posterior given every real frame, decoded (over the window's first frame; positions
  anchored as the model's); an upper bound for the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from teleworld.errors import TeleworldError
from train.dataset import EpisodeArrays
from train.model import WorldModel


@dataclass
class WindowBatch:
    """Truth and predictions of B windows. Images (B, T, 3, S, S) in [0, 1]; T = K + H."""

    starts: np.ndarray  # (B,) first step of each window in the store
    context: int
    truth: dict[str, np.ndarray]  # image (B, T, ...), proprio (B, T, P), contact (B, T, G) in {0, 1}
    preds: dict[str, dict[str, np.ndarray]]  # method -> key -> (B, H, ...) imagined steps only
    context_recon: np.ndarray  # (B, K, 3, S, S): the model's reconstruction of the context frames


def pick_windows(data: EpisodeArrays, episodes: list[int], length: int, count: int, seed: int) -> np.ndarray:
    """``count`` window starts drawn with ``seed`` from the given episodes (all of them when fewer exist)."""
    candidates = data.windows(length, np.asarray(episodes, dtype=np.int64))
    if len(candidates) == 0:
        chosen = np.asarray(episodes, dtype=np.int64)
        lengths = data.episode_ends[chosen] - data.episode_begins[chosen]
        raise TeleworldError(f"a rollout needs context + horizon = {length} steps but the evaluated episodes hold at "
                             f"most {int(lengths.max(initial=0))}; lower --horizon or --context")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))


def shuffle_actions(actions: np.ndarray, context: int, seed: int) -> np.ndarray:
    """Copy of ``actions`` (W, T, A) whose imagined part (steps K-1 .. T-2, applied after frames K-1 .. T-2) is
    pooled over windows and steps and permuted with ``seed``; the context actions stay real."""
    out = actions.copy()
    part = out[:, context - 1 : -1]
    flat = part.reshape(-1, part.shape[-1])
    out[:, context - 1 : -1] = flat[np.random.default_rng(seed).permutation(len(flat))].reshape(part.shape)
    return out


def _decode(model: WorldModel, feat: torch.Tensor, reference: torch.Tensor, imagined: bool = False,
            anchor: tuple[torch.Tensor, torch.Tensor] | None = None, thresholds: torch.Tensor | None = None
            ) -> dict[str, np.ndarray]:
    """Decoded features (B, T, F) as numpy; ``anchor``: (the proprio head on the last context posterior, the proprio
    observed there), each (B, P), on which the model's positions are anchored (WorldModel.anchor_proprio).
    ``thresholds`` (G,): the contact probability above which a group is called touching (0.5 when not given)."""
    out = model.decode(feat, reference, torch.arange(1, feat.shape[1] + 1) if imagined else None)
    pred = {"image": out["image"].clamp(0, 1)}
    if "proprio" in out:
        pred["proprio"] = out["proprio"] if anchor is None else model.anchor_proprio(out["proprio"], *anchor)
    if "contact_logits" in out:
        probability = torch.sigmoid(out["contact_logits"].float())
        pred["contact"] = probability > (0.5 if thresholds is None else thresholds.to(probability.device))
    return {k: v.float().cpu().numpy() for k, v in pred.items()}


def median_frame(data: EpisodeArrays, episodes: list[int], max_frames: int = 2000) -> np.ndarray:
    """Per-pixel median of (at most ``max_frames`` evenly spaced) frames of ``episodes``, (3, S, S) in [0, 1]."""
    steps = data.steps_of(episodes)
    steps = steps[np.linspace(0, len(steps) - 1, min(max_frames, len(steps))).astype(int)]
    return np.moveaxis(np.median(data.frames[steps], 0), -1, 0).astype(np.float32) / 255.0


@torch.no_grad()
def predict(model: WorldModel, batch: dict[str, torch.Tensor], shuffled: torch.Tensor, context: int,
            position_dims: int | None = None, background: np.ndarray | None = None,
            thresholds: np.ndarray | None = None
            ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], np.ndarray]:
    """(truth, predictions of every method for the imagined steps, context reconstructions) of one batch.

    ``position_dims``: how many leading proprio entries are positions (nq); without it there is no
    constant-velocity baseline. ``background``: the median frame (3, S, S); without it there is no
    median-frame baseline. ``thresholds``: per contact group (train/calibration.py), 0.5 when not given."""
    cut = None if thresholds is None else torch.from_numpy(np.asarray(thresholds, np.float32))
    images, actions = batch["image"], batch["action"]
    horizon = images.shape[1] - context
    # causal: the first K posteriors saw only the context (and its proprio, for a model that observes it)
    posts, _ = model.observe(images, actions, batch.get("proprio"))
    last = {k: v[:, context - 1] for k, v in posts.items()}
    heads = model.heads(model.rssm.feat(last))
    anchor = (heads["proprio"], batch["proprio"][:, context - 1]) if "proprio" in heads and "proprio" in batch else None
    recon = _decode(model, model.rssm.feat(posts), images[:, 0], anchor=anchor, thresholds=cut)
    truth = {k: v.float().cpu().numpy() for k, v in batch.items() if k not in ("action", "goal")}
    # the context posterior imagined on with the real actions, then with the shuffled ones (replay's protocol)
    dreamed = model.open_loop(images, actions, context, horizon, decode=False, start=last)["feat"]
    unrelated = model.open_loop(images, shuffled, context, horizon, decode=False, start=last)["feat"]
    preds = {
        "model": _decode(model, dreamed, images[:, context - 1], True, anchor, cut),
        "copy_last": {k: np.repeat(v[:, context - 1 : context], horizon, 1) for k, v in truth.items()},
        "shuffled_actions": _decode(model, unrelated, images[:, context - 1], True, anchor, cut),
        "reconstruction": {k: v[:, context:] for k, v in recon.items()},
    }
    if model.reward_head is not None and "reward" in batch and ("goal" in batch or not model.cfg.goal_dim):
        goal = batch["goal"][:, None] if model.cfg.goal_dim else None  # copy_last holds the reward: the constant
        preds["model"]["reward"] = model.reward(dreamed, goal).float().cpu().numpy()
    if model.blend is not None:  # the world model's own frames, without the blend toward the last context frame
        preds["model_unblended"] = _decode(model, dreamed, images[:, context - 1], False, anchor, cut)
    if background is not None:
        shape = truth["image"][:, context:].shape
        preds["median_frame"] = {"image": np.broadcast_to(background, shape)}
    if "proprio" in truth and position_dims is not None:
        p = truth["proprio"]
        velocity = p[:, context - 1] - p[:, max(context - 2, 0)]
        velocity[:, position_dims:] = 0.0  # velocities themselves are held
        steps = np.arange(1, horizon + 1, dtype=np.float32)[None, :, None]
        preds["constant_velocity"] = {"proprio": p[:, context - 1 : context] + steps * velocity[:, None]}
    return truth, preds, recon["image"][:, :context]


def rollouts(model: WorldModel, data: EpisodeArrays, starts: np.ndarray, context: int, horizon: int,
             device: torch.device | str = "cpu", seed: int = 0, position_dims: int | None = None,
             batch_size: int = 16, background: np.ndarray | None = None, thresholds: np.ndarray | None = None):
    """Yield a WindowBatch per ``batch_size`` windows; shuffled actions are drawn once over all windows."""
    length = context + horizon
    all_actions = data.action[np.asarray(starts)[:, None] + np.arange(length)[None]]
    shuffled = torch.from_numpy(shuffle_actions(all_actions, context, seed))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        batch = data.batch(chunk, length, device)
        truth, preds, recon = predict(model, batch, shuffled[i : i + batch_size].to(device), context,
                                     position_dims, background, thresholds)
        yield WindowBatch(np.asarray(chunk), context, truth, preds, recon)
