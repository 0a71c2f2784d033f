"""Replay outputs: metrics.json, metrics.csv, one plot per metric, truth | model | error videos, report.html."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from replay.html import write_html  # noqa: E402
from replay.scores import FLOOR_METHOD, METRICS  # noqa: E402

CONTEXT_COLOUR = np.array([40, 200, 60], np.uint8)
IMAGINED_COLOUR = np.array([220, 40, 40], np.uint8)
GAP_COLOUR = np.array([30, 30, 30], np.uint8)
METHOD_STYLE = {"model": "C0", "copy_last": "C1", "shuffled_actions": "C3", "reconstruction": "C2",
                "constant_velocity": "C4", "simulator": "C7", "median_frame": "C5", "model_unblended": "C9",
                FLOOR_METHOD: "k"}
POSITION_SHOWN = ("model", "model_unblended", "copy_last", "shuffled_actions")  # in the printed summary


def write_csv(metrics: dict, path: Path) -> Path:
    """Long format: one row per metric, method and imagined step (1-based) with mean and 95 % interval."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "method", "step", "value", "ci_low", "ci_high"])
        for name, by_method in metrics["per_step"].items():
            for method, values in by_method.items():
                ci = metrics["ci"][name][method]
                for h, (v, lo, hi) in enumerate(zip(values, ci["low"], ci["high"]), start=1):
                    writer.writerow([name, method, h, *("" if x is None else x for x in (v, lo, hi))])
    return path


def _draw_methods(ax, per_step: dict, ci: dict, mean: dict) -> None:
    """Each method's values per imagined step with its shaded 95 % interval (the simulator, a data check at the cap
    when the data is faithful, is left to the tables; the detector's floor is dashed)."""
    for method, values in per_step.items():
        if method == "simulator":
            continue
        y = np.array([np.nan if v is None else v for v in values], float)
        low = np.array([np.nan if v is None else v for v in ci[method]["low"]], float)
        high = np.array([np.nan if v is None else v for v in ci[method]["high"]], float)
        steps = np.arange(1, len(y) + 1)
        label = f"{method} ({'n/a' if mean[method] is None else f'{mean[method]:.3g}'})"
        style = "--" if method == FLOOR_METHOD else "-"
        ax.plot(steps, y, color=METHOD_STYLE.get(method), label=label, linestyle=style)
        ax.fill_between(steps, low, high, color=METHOD_STYLE.get(method), alpha=0.2, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_metric(metrics: dict, name: str, path: Path) -> Path:
    """One metric per imagined step for each method, with shaded 95 % bootstrap intervals."""
    info = METRICS[name]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    _draw_methods(ax, metrics["per_step"][name], metrics["ci"][name], metrics["mean"][name])
    unit = f" ({info.unit})" if info.unit else ""
    ax.set_xlabel(f"imagined step after {metrics['context']} context frames")
    ax.set_ylabel(info.label + unit)
    better = "higher" if info.higher_is_better else "lower"
    ax.set_title(f"{info.label}, {metrics['windows']} held-out windows ({better} is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_positions(metrics: dict, path: Path) -> Path:
    """Position error per imagined step, one panel for all tracked bodies and one per body, with the detector's
    floor dashed."""
    panels = ["all", *metrics["position_error"]["bodies"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), dpi=110, squeeze=False)
    for ax, body in zip(axes[0], panels):
        stats = metrics["position_error"]["per_body"][body]
        _draw_methods(ax, stats["per_step"], stats["ci"], stats["mean"])
        ax.set_xlabel(f"imagined step after {metrics['context']} context frames")
        ax.set_ylabel("position error (cm)")
        name = "all tracked bodies" if body == "all" else body
        ax.set_title(f"{name}: detected vs true position ({metrics['windows']} windows, lower is better)",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_lines(metrics: dict) -> list[str]:
    """The replay's headline figures in plain lines (what the CLI prints)."""
    psnr = metrics["mean"]["psnr"]
    unblended = f" (unblended {psnr['model_unblended']:.2f} dB)" if "model_unblended" in psnr else ""
    lines = [f"PSNR model {psnr['model']:.2f} dB{unblended}, copy-last {psnr['copy_last']:.2f} dB, median frame "
             f"{psnr['median_frame']:.2f} dB, shuffled actions {psnr['shuffled_actions']:.2f} dB, reconstruction "
             f"{psnr['reconstruction']:.2f} dB"]
    pos = metrics.get("position_error")
    for body in ([] if pos is None else [*pos["bodies"], "all"]):
        bands = "; ".join(
            f"steps {band}: " + ", ".join(f"{m} {by_method[m]['mean']:.2f}" for m in POSITION_SHOWN
                                          if by_method.get(m, {}).get("mean") is not None)
            for band, by_method in pos["bands"][body].items())
        floor = pos["floor"][body]
        lines.append(f"{body} position error (cm), {bands}; detector floor "
                     f"{'n/a' if floor is None else f'{floor:.2f}'}")
    return lines


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(..., 3, S, S) in [0, 1] -> (..., S, S, 3) uint8."""
    return (np.clip(np.moveaxis(frames, -3, -1), 0, 1) * 255).round().astype(np.uint8)


def error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(..., 3, S, S) pair -> (..., S, S, 3) uint8 heat map of the mean absolute error (x3, clipped)."""
    err = np.abs(pred - truth).mean(-3)
    return (plt.get_cmap("inferno")(np.clip(err * 3, 0, 1))[..., :3] * 255).astype(np.uint8)


def _border(tile: np.ndarray, colour: np.ndarray, width: int = 2) -> np.ndarray:
    tile = tile.copy()
    tile[:width], tile[-width:], tile[:, :width], tile[:, -width:] = colour, colour, colour, colour
    return tile


def grid_frames(video: dict[str, np.ndarray], context: int, scale: int = 2, gap: int = 2) -> list[np.ndarray]:
    """Video frames: rows truth | model | error (| simulator), one column per window; model tiles framed green in
    the context and red while imagined; a bar along the bottom shows time (green context, red imagined)."""
    truth, model = video["truth"], video["model"]
    rows = [to_uint8(truth), to_uint8(model), error_map(model, truth)]
    if "simulator" in video:
        rows.append(to_uint8(video["simulator"]))
    n, steps, side = truth.shape[0], truth.shape[1], truth.shape[-1]
    frames = []
    for t in range(steps):
        colour = CONTEXT_COLOUR if t < context else IMAGINED_COLOUR
        tiles = [[_border(row[w, t], colour) if r == 1 else row[w, t] for r, row in enumerate(rows)]
                 for w in range(n)]
        width = n * side + (n - 1) * gap
        canvas = np.empty((len(rows) * (side + gap) + 4, width, 3), np.uint8)
        canvas[:] = GAP_COLOUR
        for r in range(len(rows)):
            for w in range(n):
                y, x = r * (side + gap), w * (side + gap)
                canvas[y : y + side, x : x + side] = tiles[w][r]
        done = round(width * (t + 1) / steps)
        canvas[-3:, : min(done, round(width * context / steps))] = CONTEXT_COLOUR
        canvas[-3:, round(width * context / steps) : done] = IMAGINED_COLOUR
        frames.append(canvas.repeat(scale, 0).repeat(scale, 1))
    return frames


def write_videos(video: dict[str, np.ndarray], context: int, out_dir: Path, fps: int = 10) -> list[Path]:
    """rollouts.mp4 and rollouts.gif of the grid."""
    frames = grid_frames(video, context)
    mp4, gif = out_dir / "rollouts.mp4", out_dir / "rollouts.gif"
    with imageio.get_writer(mp4, fps=fps, macro_block_size=1, quality=8) as writer:
        for frame in frames:
            writer.append_data(frame)
    imageio.mimsave(gif, frames, duration=1000 / fps, loop=0)
    return [mp4, gif]


def write_report(metrics: dict, video: dict[str, np.ndarray], out_dir: Path) -> dict:
    """Write every output under ``out_dir``; ``video`` holds the shown windows' frames (n, K+H, 3, S, S) for
    ``truth``, ``model`` and optionally ``simulator``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    write_csv(metrics, out_dir / "metrics.csv")
    plots = [plot_positions(metrics, out_dir / f"{name}.png") if name == "position_error" and "position_error" in
             metrics else plot_metric(metrics, name, out_dir / f"{name}.png") for name in metrics["per_step"]]
    write_videos(video, metrics["context"], out_dir)
    write_html(metrics, plots, out_dir / "rollouts.gif", out_dir / "report.html")
    return metrics
