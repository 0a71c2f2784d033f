"""Open-loop PSNR on fixed validation windows during training (replay/ does the full evaluation)."""

from __future__ import annotations

import numpy as np
import torch

from train.dataset import EpisodeArrays
from train.model import WorldModel

CONTEXT, HORIZON, WINDOWS = 5, 50, 8


def psnr(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, data range 1) per frame over the last three dims, capped at 60 dB."""
    mse = (pred.clamp(0, 1) - truth).pow(2).flatten(-3).mean(-1)
    return (-10 * torch.log10(mse.clamp_min(1e-6))).clamp(max=60.0)


class Validator:
    """Fixed windows of held-out episodes; ``log`` writes model vs copy-last PSNR and a truth|model|error strip."""

    def __init__(self, data: EpisodeArrays, episodes: np.ndarray, device: torch.device):
        self.data, self.device, self.last = data, device, None
        chosen = np.asarray(episodes, dtype=np.int64)
        lengths = data.episode_ends[chosen] - data.episode_begins[chosen]
        self.horizon = int(min(HORIZON, lengths.max() - CONTEXT)) if len(lengths) else 0
        self.starts = np.zeros(0, dtype=np.int64)
        if self.horizon >= 1:
            candidates = data.windows(CONTEXT + self.horizon, episodes)
            rng = np.random.default_rng(0)
            self.starts = np.sort(rng.choice(candidates, min(WINDOWS, len(candidates)), replace=False))

    @torch.no_grad()
    def evaluate(self, model: WorldModel) -> dict | None:
        """Mean open-loop PSNR of the model and of copying the last context frame, plus one strip image."""
        if len(self.starts) == 0:
            return None
        model.eval()
        batch = self.data.batch(self.starts, CONTEXT + self.horizon, self.device)
        truth = batch["image"][:, CONTEXT:]
        pred = model.open_loop(batch["image"], batch["action"], CONTEXT, proprio=batch.get("proprio"))["image"]
        pred = pred.float().clamp(0, 1)
        copy = batch["image"][:, CONTEXT - 1 : CONTEXT].expand_as(truth)
        frames = torch.cat([truth[0], pred[0], (pred[0] - truth[0]).abs() * 3], -2)  # (H, 3, 3S, S)
        strip = frames[:: max(1, self.horizon // 10)].permute(1, 2, 0, 3).flatten(2).clamp(0, 1)
        self.last = {"openloop_psnr": psnr(pred, truth).mean().item(), "copy_last_psnr": psnr(copy, truth).mean().item(),
                     "horizon": self.horizon}
        return {**self.last, "strip": strip.cpu()}

    def log(self, model: WorldModel, logger, step: int) -> None:
        result = self.evaluate(model)
        if result is None:
            return
        logger.add_scalar("val/openloop_psnr", result["openloop_psnr"], step)
        logger.add_scalar("val/copy_last_psnr", result["copy_last_psnr"], step)
        logger.add_image("val/truth_model_error", result["strip"], step)
