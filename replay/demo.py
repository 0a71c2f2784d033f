"""The whole path on the default scene: scripted teleop -> Zarr -> train -> replay."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from recorder import EpisodeStore
from replay.evaluate import evaluate
from teleop.devices.scripted import scripted_operator
from teleop.loop import collect
from teleop.scenes import load
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train


def run_demo(out: Path, scene: str = "push", episodes: int = 200, steps: int = 120, train_steps: int = 1500,
             config: str = "small", horizon: int = 50, device: str | torch.device = "cpu", seed: int = 0,
             console: Console | None = None) -> dict:
    """Record ``episodes`` scripted episodes, train, replay; returns the replay metrics."""
    console = console or Console()
    out = Path(out)
    store_path = out / "episodes.zarr"
    if store_path.exists():
        raise TeleworldError(f"{store_path} already exists; pass a fresh --out directory")
    out.mkdir(parents=True, exist_ok=True)

    console.rule("1/3 teleop -> record (scripted operator)")
    sim = load(scene)
    with EpisodeStore.create(store_path, sim.info()) as store, progress_bar() as progress:
        task = progress.add_task(f"record {scene}", total=episodes, status="", unit="episodes")
        collect(sim, scripted_operator(sim), store, episodes, steps, seed, lambda: progress.advance(task))
    sim.close()

    console.rule("2/3 train world model")
    store = EpisodeStore.open(store_path)
    data = EpisodeArrays(store, DataSpec.from_store(store))
    result = train(data, make_config(config, steps=train_steps, seed=seed), out / "run", device)

    console.rule("3/3 replay imagined vs real on held-out episodes")
    metrics = evaluate(result["checkpoint"], store_path, out / "replay", horizon=horizon, device=device)
    psnr = metrics["mean"]["psnr"]
    console.print(
        f"open-loop PSNR over {metrics['horizon']} steps: model {psnr['model']:.2f} dB, "
        f"copy-last-frame {psnr['copy_last']:.2f} dB ({metrics['model_minus_copy_last_db']:+.2f} dB), "
        f"median frame {psnr['median_frame']:.2f} dB ({metrics['model_minus_median_frame_db']:+.2f} dB)"
    )
    console.print(metrics["action_sensitivity"]["verdict"])
    console.print(f"outputs in {out}: episodes.zarr, run/checkpoint.pt, replay/report.html (metrics.json, "
                  "metrics.csv, plots, rollouts.mp4)")
    return metrics
