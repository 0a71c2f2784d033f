"""The training loop, top to bottom: seed, data, model, optimiser, loop, checkpoint."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar
from train.checkpoint import CHECKPOINT_NAME, save_checkpoint
from train.configs import TrainConfig
from train.dataset import EpisodeArrays
from train.model import WorldModel, WorldModelConfig
from train.windows import split_episodes


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TeleworldError("--device cuda asked for, but no CUDA GPU is visible")
    return torch.device(name)


def build_model(cfg: TrainConfig, data: EpisodeArrays) -> WorldModel:
    """A fresh model sized by ``cfg`` for the shapes of ``data``."""
    spec = data.spec
    return WorldModel(
        WorldModelConfig(
            image_size=spec.image_size,
            action_dim=len(spec.action_names),
            proprio_dim=spec.proprio_dim,
            contact_dim=spec.contact_dim,
            depth=cfg.depth,
            deter=cfg.deter,
            groups=cfg.groups,
            classes=cfg.classes,
            hidden=cfg.hidden,
            openloop_steps=cfg.openloop_steps,
        )
    )


def train(
    data: EpisodeArrays,
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
) -> dict:
    """Fit a world model on random windows of the training episodes; returns a summary dict."""
    out_dir = Path(out_dir)
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # data: split by whole episode, windows never cross episodes
    train_eps, val_eps = split_episodes(data.num_episodes, cfg.val_fraction, cfg.seed)
    windows = data.windows(cfg.seq_len, train_eps)
    if len(windows) == 0:
        raise TeleworldError(f"no training episode has {cfg.seq_len} steps; record longer episodes or lower --seq-len")

    # model and optimiser
    model = build_model(cfg, data).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-6)
    warmup = min(100, cfg.steps // 10 + 1)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10 %
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.steps - warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    extra = {"train_config": vars(cfg).copy(), "val_episodes": val_eps.tolist(), "train_episodes": train_eps.tolist()}
    history: list[dict] = []
    start = time.time()
    with progress_bar(show_progress) as progress:
        task = progress.add_task("train", total=cfg.steps, status="")
        for step in range(cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            batch = data.batch(rng.choice(windows, cfg.batch_size), cfg.seq_len, device)
            loss, terms = model.loss(batch)
            terms = {k: v.detach() for k, v in terms.items()}
            if not torch.isfinite(loss):
                raise TeleworldError(f"loss became {loss.item()} at step {step}; the last good checkpoint is kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if step % 10 == 0 or step == cfg.steps - 1:
                row = {"step": step, **{k: round(v.item(), 4) for k, v in terms.items()}}
                history.append(row)
                rate = (step + 1) / (time.time() - start)
                progress.update(task, status=f"loss {row['total']:.1f} img {row['image']:.1f} {rate:.1f} it/s")
            progress.advance(task)
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                save_checkpoint(out_dir / CHECKPOINT_NAME, model, data.spec, step + 1, extra)
    path = save_checkpoint(out_dir / CHECKPOINT_NAME, model, data.spec, cfg.steps, extra)
    model.eval()
    return {"checkpoint": str(path), "steps": cfg.steps, "seconds": time.time() - start, "history": history,
            "model": model, "val_episodes": val_eps.tolist()}
