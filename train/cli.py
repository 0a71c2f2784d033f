"""train's sub-command: `teleworld train`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def train_command(
    data: Path = typer.Option(..., "--data", help="Episode store to train on."),
    out: Path = typer.Option(..., "--out", help="Run directory for the checkpoint and logs."),
    config: str = typer.Option("small", help="Named config: tiny, small, medium, large."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    steps: int = typer.Option(None, help="Override the number of training steps."),
    batch_size: int = typer.Option(None, help="Override sequences per batch."),
    seq_len: int = typer.Option(None, help="Override steps per training window."),
    seed: int = typer.Option(None, help="Override the seed (split, init, sampling)."),
    camera: str = typer.Option(None, help="Camera to learn from (default: the store's first)."),
) -> None:
    """Fit an action-conditioned world model on the episodes of a store."""
    import torch

    from recorder import EpisodeStore
    from train.configs import make_config
    from train.dataset import DataSpec, EpisodeArrays
    from train.loop import resolve_device, train

    cfg = make_config(config, steps=steps, batch_size=batch_size, seq_len=seq_len, seed=seed)
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    store = EpisodeStore.open(data)
    arrays = EpisodeArrays(store, DataSpec.from_store(store, camera))
    result = train(arrays, cfg, out, dev)
    Console().print(f"checkpoint: {result['checkpoint']} ({result['steps']} steps in {result['seconds']:.0f} s on {dev})")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
