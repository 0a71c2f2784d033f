"""report.html: one self-contained page (images inlined as data URIs) with the verdict, table, plots and video."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from replay.scores import METRICS

METHOD_ORDER = ("model", "copy_last", "median_frame", "constant_velocity", "shuffled_actions", "reconstruction",
                "simulator")
METHOD_NOTE = {
    "model": "K real frames, then H steps imagined with the real actions",
    "copy_last": "the last context frame / proprio / contacts held",
    "median_frame": "the per-pixel median of the training frames: the scene with nothing where things move",
    "constant_velocity": "positions extrapolated with their last change, velocities held (proprio only)",
    "shuffled_actions": "the model imagining with shuffled actions",
    "reconstruction": "the model seeing every real frame: upper bound",
    "simulator": "the scene re-run from the recorded state with the recorded actions: a check of the data",
}


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _cell(mean: float | None, ci: list) -> str:
    if mean is None:
        return "<td>n/a</td>"
    low, high = ("?" if v is None else f"{v:.3g}" for v in ci)
    return f"<td>{mean:.3g} <small>[{low}, {high}]</small></td>"


def summary_table(metrics: dict) -> str:
    """Metric rows x method columns: mean over the horizon and its 95 % interval."""
    methods = [m for m in METHOD_ORDER if any(m in v for v in metrics["mean"].values())]
    head = "".join(f"<th title='{html.escape(METHOD_NOTE[m])}'>{m}</th>" for m in methods)
    rows = []
    for name, by_method in metrics["mean"].items():
        info = METRICS[name]
        label = f"{info.label}{f' ({info.unit})' if info.unit else ''} {'↑' if info.higher_is_better else '↓'}"
        cells = "".join(_cell(by_method[m], metrics["mean_ci"][name][m]) if m in by_method else "<td>–</td>"
                        for m in methods)
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def write_html(metrics: dict, plots: list[Path], gif: Path, path: Path) -> Path:
    """Write the page; everything it shows is embedded, so the file can be mailed or archived alone."""
    act = metrics["action_sensitivity"]
    verdict_class = "bad" if act["ignores_actions"] else "good"
    psnr = metrics["mean"]["psnr"]
    figures = "".join(f"<figure><img alt='{p.stem}' src='{_data_uri(p, 'image/png')}'></figure>" for p in plots)
    shown = [m for m in METHOD_ORDER if any(m in v for v in metrics["mean"].values())]
    notes = "".join(f"<li><b>{m}</b>: {html.escape(METHOD_NOTE[m])}</li>" for m in shown)
    changed = (f"<p class='verdict bad'>Scene {html.escape(str(metrics.get('scene', '')))} has changed since this "
               "data was recorded (its MJCF differs from the stored one): the simulator method shows today's scene, "
               "not the recorded one.</p>") if metrics.get("simulator_scene_changed") else ""
    video_rows = "truth | model | error (mean absolute error, x3)"
    video_rows += " | simulator" if "simulator" in metrics["mean"]["psnr"] else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>teleworld replay report</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
td {{ text-align: right; }} small {{ color: #666; }}
.verdict {{ padding: 0.8em 1em; border-radius: 6px; font-weight: bold; }}
.bad {{ background: #fde2e1; border: 1px solid #d33; }} .good {{ background: #e3f6e5; border: 1px solid #3a3; }}
figure {{ display: inline-block; margin: 0.5em; }} figure img {{ width: 520px; }} img {{ max-width: 100%; }}
.video img {{ image-rendering: pixelated; border: 1px solid #888; }}
</style></head><body>
<h1>Imagined vs real: open-loop replay</h1>
<p>Model <code>{html.escape(str(metrics.get("model_path", "")))}</code> (step {metrics.get("model_step", "?")}) on
<code>{html.escape(str(metrics.get("data_path", "")))}</code>: {metrics["windows"]} windows from held-out episodes
{metrics.get("episodes", "")}, drawn with seed {metrics.get("seed", "?")}; K = {metrics["context"]} context frames
observed with the real actions, then H = {metrics["horizon"]} steps imagined open loop with the real actions.</p>
<p class="verdict {verdict_class}">{html.escape(act["verdict"])}</p>
<p>Mean PSNR over the horizon: model {psnr["model"]:.2f} dB, copy-last-frame {psnr["copy_last"]:.2f} dB
({metrics["model_minus_copy_last_db"]:+.2f} dB), median frame {psnr["median_frame"]:.2f} dB (a model no better than
this wins by erasing), reconstruction (upper bound) {psnr["reconstruction"]:.2f} dB.</p>
<h2>Summary</h2>
<p>Means over the imagined horizon with 95 % bootstrap intervals over windows. Contact F1 is pooled over windows,
steps and contact groups.</p>
{summary_table(metrics)}
<ul>{notes}</ul>
{changed}
<h2>Rollouts</h2>
<p>Rows: {video_rows}. Model frames are framed <span style="color:#28c83c">green
</span> while the model sees the real frame (context) and <span style="color:#dc2828">red</span> while it imagines;
the bar at the bottom is time. Also <a href="rollouts.mp4">rollouts.mp4</a>.</p>
<div class="video"><img alt="rollouts" src="{_data_uri(gif, "image/gif")}">
</div>
<h2>Metrics over the horizon</h2>
{figures}
<h2>Protocol</h2>
<p>PSNR uses data range 1 on images in [0, 1] and is capped at {metrics["psnr_cap_db"]:g} dB for identical frames.
SSIM: pytorch-msssim, Gaussian window 11, σ 1.5. PSNR on moved pixels scores only the pixels where the true frame
differs from the last context frame by more than {metrics["moved_threshold"]:g} in some channel (where copying the
last frame is wrong). Proprio RMSE is over concat(qpos, qvel) in native units. Details: docs/replay.md.</p>
</body></html>
"""
    path.write_text(page)
    return path
