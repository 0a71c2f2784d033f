"""report.html: one self-contained page (images inlined as data URIs) with the verdict, table, plots and video."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from replay.scores import FLOOR_METHOD, METRICS

METHOD_ORDER = ("model", "model_unblended", "copy_last", "median_frame", "constant_velocity", "shuffled_actions",
                "reconstruction", "simulator", FLOOR_METHOD)
METHOD_NOTE = {
    "model": "K real frames, then H steps imagined with the real actions",
    "model_unblended": "the same imagined states drawn without the blend toward the last context frame: the world "
                       "model's own frames",
    "copy_last": "the last context frame / proprio / contacts held",
    "median_frame": "the per-pixel median of the training frames: the scene with nothing where things move",
    "constant_velocity": "positions extrapolated with their last change, velocities held (proprio only)",
    "shuffled_actions": "the model imagining with shuffled actions",
    "reconstruction": "the model seeing every real frame: upper bound",
    "simulator": "the scene re-run from the recorded state with the recorded actions: a check of the data",
    FLOOR_METHOD: "the position detector on the real frames: its own error, the floor of the position error",
}


def page_head(title: str) -> str:
    """The opening of a teleworld report page up to its open <style> (the shared rules); the page adds its own."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
td {{ text-align: right; }} small {{ color: #666; }}"""


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _cell(mean: float | None, ci: list) -> str:
    if mean is None:
        return "<td>n/a</td>"
    low, high = ("?" if v is None else f"{v:.3g}" for v in ci)
    return f"<td>{mean:.3g} <small>[{low}, {high}]</small></td>"


def summary_table(metrics: dict, key: str = "mean") -> str:
    """Metric rows x method columns: mean over the horizon (``key`` "mean_from_step": from step 5 on) and its 95 %
    interval."""
    methods = [m for m in METHOD_ORDER if any(m in v for v in metrics[key].values())]
    head = "".join(f"<th title='{html.escape(METHOD_NOTE[m])}'>{m}</th>" for m in methods)
    rows = []
    for name, by_method in metrics[key].items():
        info = METRICS[name]
        label = f"{info.label}{f' ({info.unit})' if info.unit else ''} {'↑' if info.higher_is_better else '↓'}"
        cells = "".join(_cell(by_method[m], metrics[f"{key}_ci"][name][m]) if m in by_method else "<td>–</td>"
                        for m in methods)
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


CONTACT_KIND_LABEL = {"contact": "contact per step", "onset": "onset", "release": "release"}


def from_step_html(metrics: dict) -> str:
    """The summary table again, from imagined step ``from_step`` on (where holding the last value stops winning)."""
    if "mean_from_step" not in metrics:
        return ""
    return (f"<h2>From imagined step {metrics['from_step']} on</h2><p>The same means and intervals over imagined "
            f"steps {metrics['from_step']} to {metrics['horizon']} only.</p>{summary_table(metrics, 'mean_from_step')}")


def contact_events_html(metrics: dict) -> str:
    """Per contact group: F1 of contact states, onsets and releases for each method, with intervals, precision,
    recall and the number of true events; over the horizon and from step ``from_step`` on."""
    events = metrics.get("contact_events")
    if not events:
        return ""
    present = {m for kinds in events["horizon"].values() for by_method in kinds.values() for m in by_method}
    methods = [m for m in METHOD_ORDER if m in present]
    head = "".join(f"<th title='{html.escape(METHOD_NOTE[m])}'>{m}</th>" for m in methods)
    rows = []
    for span, steps in (("horizon", "all imagined steps"), ("from_step", f"from step {metrics.get('from_step', '?')}")):
        for kind, by_group in events[span].items():
            for group, by_method in by_group.items():
                true = next(iter(by_method.values()))["true"]
                label = f"{group} {CONTACT_KIND_LABEL.get(kind, kind)}, {steps} ({true} true)"
                cells = "".join(_rates_cell(by_method[m]) if m in by_method else "<td>–</td>" for m in methods)
                rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return (f"<h2>Contact events</h2><p>Per contact group: F1 of the contact flags per step, and of contact onsets "
            f"(no touch to touch) and releases matched one to one within ±{events['tolerance_steps']} steps, with "
            f"95 % bootstrap intervals over windows; P precision, R recall. Copy-last holds the last context "
            f"step's contacts, so it predicts no onset or release.</p>"
            f"<table><tr><th>group, kind, steps</th>{head}</tr>{''.join(rows)}</table>")


def _rates_cell(stats: dict) -> str:
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    return (f"<td>{num(stats['f1'])} <small>[{num(stats['f1_ci'][0])}, {num(stats['f1_ci'][1])}] "
            f"P {num(stats['precision'])} R {num(stats['recall'])}</small></td>")


def positions_html(metrics: dict) -> str:
    """Position error per tracked body and step band, each method with its interval, and the detector's floor."""
    pos = metrics.get("position_error")
    if not pos:
        return ""
    methods = [m for m in METHOD_ORDER if m in pos["per_body"]["all"]["mean"]]
    head = "".join(f"<th title='{html.escape(METHOD_NOTE[m])}'>{m}</th>" for m in methods)
    rows = []
    for body, bands in pos["bands"].items():
        for band, by_method in bands.items():
            cells = "".join(_cell(by_method[m]["mean"], by_method[m]["ci"]) if m in by_method else "<td>–</td>"
                            for m in methods)
            rows.append(f"<tr><th>{html.escape(body)}, imagined steps {band}</th>{cells}</tr>")
    floors = ", ".join(f"{b} {'n/a' if v is None else f'{v:.2f}'} cm" for b, v in pos["floor"].items())
    return (f"<h2>Where the objects are</h2><p>Distance in cm between each tracked body's position read off the "
            f"frames by a detector (trained on real frames of the run's training episodes) and its true position "
            f"(the recorded state re-simulated), mean over windows with 95 % bootstrap intervals. The detector's own "
            f"error on the real held-out frames ({FLOOR_METHOD}) is the floor: {html.escape(floors)}. Copy-last's "
            f"error is how far each body really moved.</p>"
            f"<table><tr><th>body, steps</th>{head}</tr>{''.join(rows)}</table>")


def versus_html(metrics: dict) -> str:
    """What training bought, then one line per baseline saying plainly whether the model beat it."""
    train = metrics.get("training", {})
    bought = ""
    if train:
        minutes = f"{train['seconds'] / 60:.1f} min" if train.get("seconds") is not None else "unknown time"
        budget = f" (budget {train['budget_minutes']:g} min)" if train.get("budget_minutes") else ""
        bought = f"<p>Training: {train['steps']} steps in {minutes}{budget}.</p>"
    lines = "".join(f"<li class='{'good' if v['beats'] else 'bad'}'>{html.escape(v['sentence'])}</li>"
                    for v in metrics.get("versus_baselines", {}).values())
    return f"{bought}<ul class='versus'>{lines}</ul>"


def unblended_html(psnr: dict) -> str:
    """A sentence on the model's own frames next to the blended ones (only for a model with a blend)."""
    if "model_unblended" not in psnr:
        return ""
    return (f" Without its blend toward the last context frame the model scores {psnr['model_unblended']:.2f} dB "
            f"({psnr['model_unblended'] - psnr['copy_last']:+.2f} dB against copy-last): its own frames.")


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
    page = page_head("teleworld replay report") + f"""
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
{versus_html(metrics)}
<p>Mean PSNR over the horizon: model {psnr["model"]:.2f} dB, copy-last-frame {psnr["copy_last"]:.2f} dB
({metrics["model_minus_copy_last_db"]:+.2f} dB), median frame {psnr["median_frame"]:.2f} dB (a model no better than
this wins by erasing), reconstruction (upper bound) {psnr["reconstruction"]:.2f} dB.{unblended_html(psnr)}</p>
<h2>Summary</h2>
<p>Means over the imagined horizon with 95 % bootstrap intervals over windows. Contact F1 is pooled over windows,
steps and contact groups.</p>
{summary_table(metrics)}
<ul>{notes}</ul>
{changed}
{from_step_html(metrics)}
{contact_events_html(metrics)}
<h2>Rollouts</h2>
<p>Rows: {video_rows}. Model frames are framed <span style="color:#28c83c">green
</span> while the model sees the real frame (context) and <span style="color:#dc2828">red</span> while it imagines;
the bar at the bottom is time. Also <a href="rollouts.mp4">rollouts.mp4</a>.</p>
<div class="video"><img alt="rollouts" src="{_data_uri(gif, "image/gif")}">
</div>
<h2>Metrics over the horizon</h2>
{figures}
{positions_html(metrics)}
<h2>Protocol</h2>
<p>PSNR uses data range 1 on images in [0, 1] and is capped at {metrics["psnr_cap_db"]:g} dB for identical frames.
SSIM: pytorch-msssim, Gaussian window 11, σ 1.5. PSNR on moved pixels scores only the pixels where the true frame
differs from the last context frame by more than {metrics["moved_threshold"]:g} in some channel (where copying the
last frame is wrong). Proprio RMSE is over concat(qpos, qvel) in native units. Details: docs/replay.md.</p>
</body></html>
"""
    path.write_text(page)
    return path
