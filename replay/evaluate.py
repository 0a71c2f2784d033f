"""Evaluate a trained model on held-out episodes of a store and write the replay report."""

from __future__ import annotations

from pathlib import Path

import torch

from recorder import EpisodeStore
from replay.report import write_report
from replay.rollout import pick_windows, rollout
from teleworld.errors import TeleworldError
from train.checkpoint import load_model
from train.dataset import DataSpec, EpisodeArrays


def evaluate(model_path: str | Path, data_path: str | Path, out_dir: str | Path, context: int = 5,
             horizon: int = 50, windows: int = 16, seed: int = 0, device: str | torch.device = "cpu",
             episodes: list[int] | None = None) -> dict:
    """Open-loop replay of held-out windows; writes metrics.json, psnr.png, rollouts.mp4 into ``out_dir``."""
    if context < 1 or horizon < 1:
        raise TeleworldError("context and horizon must both be at least 1")
    model, spec, ckpt = load_model(model_path, device)
    store = EpisodeStore.open(data_path)
    spec.check_compatible(DataSpec.from_store(store, spec.camera))
    data = EpisodeArrays(store, spec)
    if episodes is None:  # the run's held-out episodes when they exist in this store, else all
        held_out = [e for e in ckpt.get("val_episodes", []) if e < data.num_episodes]
        episodes = held_out or list(range(data.num_episodes))
    starts = pick_windows(data, episodes, context + horizon, windows, seed)
    rollouts = rollout(model, data, starts, context, horizon, device)
    return write_report(rollouts, Path(out_dir), {"episodes": episodes, "model_step": ckpt["step"]})
