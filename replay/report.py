"""Replay outputs: metrics.json, a PSNR-over-horizon plot and a truth | model | error video."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from replay.metrics import PSNR_CAP, psnr  # noqa: E402
from replay.rollout import Rollouts  # noqa: E402

CONTEXT_COLOUR = np.array([40, 200, 60], np.uint8)
IMAGINED_COLOUR = np.array([220, 40, 40], np.uint8)


def compute_metrics(r: Rollouts) -> dict:
    """Per-step PSNR over the imagined horizon for the model and copy-last-frame, on the same windows."""
    k = r.context
    methods = {"model": r.model, "copy_last": r.copy_last}
    per_step = {name: psnr(pred, r.truth)[:, k:].mean(0) for name, pred in methods.items()}
    mean = {name: float(v.mean()) for name, v in per_step.items()}
    return {
        "context": k,
        "horizon": int(r.truth.shape[1] - k),
        "windows": int(len(r.starts)),
        "window_starts": r.starts.tolist(),
        "psnr_cap_db": PSNR_CAP,
        "per_step": {"psnr": {name: np.round(v, 4).tolist() for name, v in per_step.items()}},
        "mean": {"psnr": mean},
        "context_reconstruction_psnr": float(psnr(r.model, r.truth)[:, :k].mean()),
        "model_minus_copy_last_db": mean["model"] - mean["copy_last"],
    }


def plot_psnr(metrics: dict, path: Path) -> Path:
    """PSNR per imagined step for each method."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for name, values in metrics["per_step"]["psnr"].items():
        steps = np.arange(1, len(values) + 1)
        ax.plot(steps, values, label=f"{name} (mean {np.mean(values):.2f} dB)")
    ax.set_xlabel(f"imagined step after {metrics['context']} context frames")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Open-loop prediction, {metrics['windows']} held-out windows")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    """(..., 3, S, S) in [0, 1] -> (..., S, S, 3) uint8."""
    return (np.clip(np.moveaxis(frames, -3, -1), 0, 1) * 255).round().astype(np.uint8)


def _error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    err = np.abs(pred - truth).mean(-3)  # (..., S, S)
    return (plt.get_cmap("inferno")(np.clip(err * 3, 0, 1))[..., :3] * 255).astype(np.uint8)


def _border(tile: np.ndarray, colour: np.ndarray, width: int = 2) -> np.ndarray:
    tile = tile.copy()
    tile[:width], tile[-width:], tile[:, :width], tile[:, -width:] = colour, colour, colour, colour
    return tile


def write_video(r: Rollouts, path: Path, windows: int = 4, scale: int = 3, fps: int = 10) -> Path:
    """MP4: one row per window, columns truth | model | error; green border = context, red = imagined."""
    n = min(windows, len(r.starts))
    truth, model = _to_uint8(r.truth[:n]), _to_uint8(r.model[:n])
    error = _error_map(r.model[:n], r.truth[:n])
    with imageio.get_writer(path, fps=fps, macro_block_size=1, quality=8) as writer:
        for t in range(truth.shape[1]):
            colour = CONTEXT_COLOUR if t < r.context else IMAGINED_COLOUR
            rows = [np.concatenate([truth[w, t], _border(model[w, t], colour), error[w, t]], 1) for w in range(n)]
            frame = np.concatenate(rows, 0).repeat(scale, 0).repeat(scale, 1)
            writer.append_data(frame)
    return path


def write_report(r: Rollouts, out_dir: Path, extra: dict | None = None) -> dict:
    """Write metrics.json, psnr.png and rollouts.mp4 under ``out_dir``; returns the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {**compute_metrics(r), **(extra or {})}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_psnr(metrics, out_dir / "psnr.png")
    write_video(r, out_dir / "rollouts.mp4")
    return metrics
