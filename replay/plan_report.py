"""report.html of `teleworld plan`: one self-contained page (plots and animation inlined) with the verdict first."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from replay.html import page_head  # noqa: E402

METHOD_NOTE = {
    "model": "the planner scoring candidates by the world model's imagined reward, from its posterior of the real frames",
    "random": "the scene's exploration operator: random actions held for a random number of steps",
    "oracle": "the same planner scoring candidates in the true simulator (smaller budget): the planner's upper bound",
    "expert": "the scene's goal-aware scripted operator (the one `teleworld generate` records)",
}
GIF_STRIDE = 2  # every other control step, half size: keeps the page small


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def success_plot(methods: dict) -> str:
    """Success rate per method with its Wilson 95 % interval."""
    names = list(methods)
    rate = np.array([methods[m]["success_rate"] for m in names])
    low = rate - np.array([methods[m]["ci"][0] for m in names])
    high = np.array([methods[m]["ci"][1] for m in names]) - rate
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.bar(names, rate, yerr=[low, high], capsize=6, color=["#3a7", "#999", "#37c", "#c83"][: len(names)])
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (95 % CI)")
    ax.set_title("episodes that reached the goal")
    return _png(fig)


def calibration_plot(results: dict) -> str | None:
    """Per plan of the model: spread of its imagined returns vs how far the return the simulator gave was off."""
    rows = [r for e in results.get("model", []) for r in e.calibration]
    if not rows:
        return None
    pred, spread, real = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.6))
    axes[0].scatter(pred, real, s=6, alpha=0.4, color="#37c")
    lim = [min(pred.min(), real.min()), max(pred.max(), real.max())]
    axes[0].plot(lim, lim, color="#888", lw=1)
    axes[0].set_xlabel("imagined return of the chosen plan")
    axes[0].set_ylabel("return the simulator gave")
    axes[0].set_title("does the model know what its plan yields?")
    axes[1].scatter(spread, np.abs(pred - real), s=6, alpha=0.4, color="#c83")
    axes[1].set_xlabel("spread of imagined returns (std over sampled futures)")
    axes[1].set_ylabel("|imagined - real| return")
    axes[1].set_title("calibration: is a wider spread a bigger miss?")
    return _png(fig)


def ranking_plot(results: dict) -> str | None:
    """Per rank-checked plan of the model: how its candidate ranking agreed with the simulator's."""
    rows = [r for e in results.get("model", []) for r in e.ranking]
    rho = np.array([r[1] for r in rows if r[1] is not None])
    if not len(rho):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.4))
    axes[0].hist(rho, bins=np.linspace(-1, 1, 21), color="#37c")
    axes[0].set_xlabel("Spearman rho, model vs simulator returns")
    axes[0].set_ylabel("plans")
    axes[0].set_title(f"ranks plans as the world does? (mean {rho.mean():.2f})")
    axes[1].hist([r[2] for r in rows], bins=np.linspace(0, 1, 11), color="#c83")
    axes[1].set_xlabel("true quantile of the model's pick (1: best)")
    axes[1].set_ylabel("plans")
    axes[1].set_title("does its favourite truly lead?")
    return _png(fig)


def _gif(video: Path) -> str:
    frames = [f[::GIF_STRIDE, ::GIF_STRIDE] for i, f in enumerate(imageio.get_reader(video)) if i % GIF_STRIDE == 0]
    buf = io.BytesIO()
    imageio.mimsave(buf, frames, format="GIF", duration=1000 * GIF_STRIDE / 20, loop=0)
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _ci(stats: dict) -> str:
    low, high = stats["ci"]
    return f"{stats['success_rate']:.2f} <small>[{low:.2f}, {high:.2f}]</small>"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def verdicts(summary: dict) -> list[tuple[bool, str]]:
    """Plain sentences for the issue's bar: model >= 2x random, model >= 0.5x oracle."""
    m, c = summary["methods"], summary["comparisons"]
    out = []
    if "model" in m and "random" in m:
        ratio = c["model_over_random"]
        text = "n/a (random never succeeded)" if ratio is None else f"{ratio:.2f}x"
        good = m["model"]["success_rate"] >= 2 * m["random"]["success_rate"] and m["model"]["success_rate"] > 0
        out.append((good, f"model vs random: {m['model']['success_rate']:.2f} vs {m['random']['success_rate']:.2f} "
                          f"success ({text}; the bar is 2x)"))
    if "model" in m and "oracle" in m:
        ratio = c["model_over_oracle"]
        text = "n/a (the oracle never succeeded)" if ratio is None else f"{ratio:.2f}x"
        good = ratio is not None and ratio >= 0.5
        out.append((good, f"model vs oracle: {m['model']['success_rate']:.2f} vs {m['oracle']['success_rate']:.2f} "
                          f"success ({text}; the bar is 0.5x)"))
    return out


def write_report(summary: dict, results: dict, videos: dict[str, Path], out_dir: Path) -> Path:
    """Write out_dir/report.html; every image is embedded, so the page travels alone."""
    cfg, methods = summary["config"], summary["methods"]
    rows = "".join(
        f"<tr><th title='{html.escape(METHOD_NOTE[name])}'>{name}</th><td>{_ci(s)}</td><td>{s['successes']}/"
        f"{s['episodes']}</td><td>{s['final_distance_mean']:.3f}</td><td>{s['steps_mean']:.1f}</td>"
        f"<td>{s['return_mean']:.2f}</td><td>{_ms(s['plan_ms_p50'])}</td><td>{_ms(s['plan_ms_p99'])}</td></tr>"
        for name, s in methods.items())
    lines = "".join(f"<li class='{'good' if good else 'bad'}'>{html.escape(text)}</li>"
                    for good, text in verdicts(summary))
    notes = "".join(f"<li><b>{m}</b>: {html.escape(METHOD_NOTE[m])}</li>" for m in methods)
    calibration = calibration_plot(results)
    cal_html = (f"<h2>Calibration</h2><p>Each dot is one plan of the model: its imagined return against the return "
                f"the simulator then gave over the same horizon (replanning in between).</p>"
                f"<figure><img alt='calibration' src='{calibration}'></figure>") if calibration else ""
    ranking = ranking_plot(results)
    rank_html = (f"<h2>Ranking</h2><p>At the model's first {cfg['rank_checks']} plans of each episode, the "
                 f"simulator also scored the candidates of the planner's last iteration from the same state: rho 1 "
                 f"means the model orders candidates as the world would, 0 that its order is noise.</p>"
                 f"<figure><img alt='ranking' src='{ranking}'></figure>") if ranking else ""
    clips = "".join(f"<figure><figcaption>{m}: <a href='{p.name}'>{p.name}</a></figcaption>"
                    f"<img class='video' alt='{m} video' src='{_gif(p)}'></figure>" for m, p in videos.items())
    planner = cfg["planner"]
    skipped = f" Skipped: {', '.join(cfg['skipped'])} (no such operator for this scene)." if cfg["skipped"] else ""
    page = page_head("teleworld plan report") + f"""
.bad {{ background: #fde2e1; }} .good {{ background: #e3f6e5; }} li {{ padding: 2px 6px; }}
figure {{ display: inline-block; margin: 0.5em; }} .video {{ image-rendering: pixelated; border: 1px solid #888; }}
</style></head><body>
<h1>Planning with the world model: {html.escape(cfg["scene"])}</h1>
<p>Model <code>{html.escape(cfg["model"])}</code> (step {cfg["model_step"]}). {cfg["episodes"]} episodes per method on
the same seeds {cfg["seeds"][0]}..{cfg["seeds"][1]}, at most {cfg["steps"]} control steps each, ending at the scene's
own success. Planner {planner["planner"]}: {planner["candidates"]} candidates x horizon {planner["horizon"]},
{planner["iterations"]} iterations, {planner["elites"]} elites, {planner["samples"]} sampled future(s) per candidate
(spread penalty {planner["spread_penalty"]:g}), replanning every {cfg["replan"]} step(s); the oracle:
{cfg["oracle_candidates"]} candidates, {cfg["oracle_iterations"]} iterations.{skipped}</p>
<ul>{lines}</ul>
<table><tr><th>method</th><th>success rate [95 % CI]</th><th>successes</th><th>final distance (m)</th>
<th>steps</th><th>return</th><th>plan ms p50</th><th>plan ms p99</th></tr>{rows}</table>
<ul>{notes}</ul>
<figure><img alt='success rates' src='{success_plot(methods)}'></figure>
{cal_html}
{rank_html}
<h2>Episodes</h2>
<p>Each clip: the real camera | the frame the model imagines at the end of its chosen plan (grey: the method imagines
nothing) | the goal.</p>
{clips}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
