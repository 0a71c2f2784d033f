"""`teleworld demo`, the whole path on the default scene: scripted teleop -> Zarr -> train -> replay.

It sits on top of every stage (it imports all four), next to the command itself."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import typer
from rich.console import Console

from recorder import EpisodeStore
from replay.evaluate import evaluate
from teleop.generate import Job, build_scene, generate_episodes
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from teleworld.device import resolve_device
from train.loop import train


# `teleworld demo --quick`: under 3 minutes; the clock, not the preset's 40 steps, ends its training
QUICK = {"episodes": 40, "config": "tiny", "minutes": 1.5, "horizon": 30, "train_steps": 100_000}
RECORD_AND_REPLAY_MINUTES = 2.5  # recording 200 episodes with 2 workers (1.5 min) and replaying them, two slow cores


def run_demo(out: Path, scene: str = "push", episodes: int = 200, steps: int = 120, minutes: float = 6.0,
             config: str = "small", horizon: int = 50, device: str | torch.device = "cpu", seed: int = 0,
             workers: int = 2, train_steps: int | None = None, console: Console | None = None) -> dict:
    """Record ``episodes`` scripted episodes, train for ``minutes`` (wall clock), replay; returns the replay metrics."""
    console = console or Console()
    out = Path(out)
    store_path = out / "episodes.zarr"
    if store_path.exists():
        raise TeleworldError(f"{store_path} already exists; pass a fresh --out directory")
    out.mkdir(parents=True, exist_ok=True)
    expected = minutes + RECORD_AND_REPLAY_MINUTES * min(1.0, episodes / 200)
    console.print(f"This demo takes about {math.ceil(expected)} minutes: recording {episodes} episodes, training {config!r} "
                  f"for {minutes:g} minutes, then replay.")

    console.rule("1/3 teleop -> record (scripted operator)")
    job = Job(scene, steps)
    sim = build_scene(job)
    with EpisodeStore.create(store_path, sim.info()) as store, progress_bar() as progress:
        task = progress.add_task(f"record {scene} x{workers}", total=episodes, status="", unit="episodes")
        generate_episodes(store, job, list(range(seed, seed + episodes)), workers,
                          on_episode=lambda _seed: progress.advance(task))
    sim.close()

    console.rule(f"2/3 train world model ({minutes:g} minutes)")
    store = EpisodeStore.open(store_path)
    data = EpisodeArrays(store, DataSpec.from_store(store))
    options = {"minutes": minutes, "seed": seed, **({"steps": train_steps} if train_steps else {})}
    result = train(data, make_config(config, **options), out / "run", device)

    console.rule("3/3 replay imagined vs real on held-out episodes")
    metrics = evaluate(result["checkpoint"], store_path, out / "replay", horizon=horizon, device=device)
    psnr = metrics["mean"]["psnr"]
    console.print(f"trained {result['steps']} steps in {result['seconds'] / 60:.1f} minutes on {device}")
    console.print(f"open-loop PSNR over {metrics['horizon']} steps: model {psnr['model']:.2f} dB, copy-last-frame "
                  f"{psnr['copy_last']:.2f} dB, median frame {psnr['median_frame']:.2f} dB, shuffled actions "
                  f"{psnr['shuffled_actions']:.2f} dB")
    for verdict in metrics["versus_baselines"].values():
        console.print(verdict["sentence"])
    console.print(f"outputs in {out}: episodes.zarr, run/checkpoint.pt, replay/report.html (metrics.json, "
                  "metrics.csv, plots, rollouts.mp4). For the quality in docs/training.md train longer: "
                  f"teleworld train --data {store_path} --out {out / 'run'} --resume --minutes 20")
    return metrics


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Fresh directory for every output."),
    episodes: int = typer.Option(200, min=1, help="Scripted episodes to record."),
    steps: int = typer.Option(120, min=1, help="Steps per episode."),
    minutes: float = typer.Option(6.0, min=0.1, help="Wall-clock minutes of training."),
    train_steps: int = typer.Option(None, help="Also stop training at this many steps (default: the config's)."),
    config: str = typer.Option("small", help="Model config name."),
    horizon: int = typer.Option(50, help="Open-loop steps imagined in the replay."),
    workers: int = typer.Option(2, min=1, help="Processes that record episodes."),
    quick: bool = typer.Option(False, help="A short tour (< 3 minutes): 40 episodes, the tiny model for 1.5 minutes, "
                                           "horizon 30. Its model learns little; the default demo shows one that does."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Run the whole path on the default scene: scripted teleop -> record -> train -> replay, in about 9 minutes."""
    settings = dict(QUICK) if quick else {"episodes": episodes, "config": config, "minutes": minutes,
                                          "horizon": horizon}
    if train_steps:
        settings["train_steps"] = train_steps
    run_demo(out, steps=steps, workers=workers, device=resolve_device(device), **settings)
