"""train's sub-command: `teleworld train`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def train_command(
    data: Path = typer.Option(..., "--data", help="Episode store to train on."),
    out: Path = typer.Option(..., "--out", help="Run directory: checkpoint.pt and tensorboard/."),
    config: str | None = typer.Option(None, help="Preset (tiny, small, medium, large) or a path to a .toml file; "
                                      "default small, or with --resume the run's saved config. `state`: a "
                                      "state-space model (an MLP on qpos, qvel and the scene's step extras) for "
                                      "planning, the baseline of the image world model; with --set observe=frames "
                                      "it also learns to read that state from the camera (docs/planning.md)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    steps: int = typer.Option(None, help="Override the number of training steps."),
    minutes: float = typer.Option(None, min=0, help="Wall-clock budget: stop after this many minutes of training "
                                  "(or at --steps, whichever comes first), checkpoint, resumable."),
    batch_size: int = typer.Option(None, help="Override sequences per batch."),
    seq_len: int = typer.Option(None, help="Override steps per training window."),
    seed: int = typer.Option(None, help="Override the seed (split, init, data order)."),
    overrides: list[str] = typer.Option([], "--set", help="Any config key, dotted or flat where unambiguous, e.g. "
                                        "--set model.deter=256 --set run.lr=3e-4 --set compile=true."),
    camera: str = typer.Option(None, help="Camera to learn from (default: the store's first)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint and saved config."),
    cache: str = typer.Option("auto", help="Frames in RAM (ram), read by chunk with an LRU cache (chunks), or ram "
                              "when they fit in --cache-gb (auto): stores larger than RAM train with chunks."),
    cache_gb: float = typer.Option(None, min=0.01, help="RAM for frames (default: half the machine's memory)."),
) -> None:
    """Fit an action-conditioned world model on the episodes of a store."""
    from recorder import EpisodeStore
    from train.configs import config_values, make_config, parse_overrides, resume_config, saved_config
    from train.dataset import DataSpec, EpisodeArrays
    from teleworld.device import resolve_device
    from train.loop import resumable_checkpoint, train

    named = {"steps": steps, "minutes": minutes, "batch_size": batch_size, "seq_len": seq_len, "seed": seed}
    options = {**parse_overrides(overrides), **{k: v for k, v in named.items() if v is not None}}
    if config == STATE:
        train_state(data, out, resume or device not in ("auto", "cpu"), options)
        return
    if resume:
        cfg = resume_config(saved_config(resumable_checkpoint(out)), config_values(config, **options))
    else:
        cfg = make_config(config or "small", **options)
    dev = resolve_device(device)
    store = EpisodeStore.open(data)
    budget = int(cache_gb * 2**30) if cache_gb else None
    arrays = EpisodeArrays(store, DataSpec.from_store(store, camera), cache=cache, max_cache_bytes=budget)
    result = train(arrays, cfg, out, dev, resume=resume)
    if result["rank"] == 0:
        summary = (f"checkpoint: {result['checkpoint']} ({result['steps']} steps, {result['seconds']:.0f} s on {dev}, "
                   f"{result['threads']} threads)")
        if result["validation"]:
            v = result["validation"]
            summary += f"; val open-loop PSNR {v['openloop_psnr']:.2f} dB vs copy-last {v['copy_last_psnr']:.2f} dB"
        Console().print(summary)


STATE = "state"


def train_state(data: Path, out: Path, refused: bool, values: dict) -> None:
    """`teleworld train --config state`: fit a state-space model (train/state_model.py) and print its summary;
    ``refused``: --resume or a --device other than the CPU was given."""
    from dataclasses import fields

    from recorder import EpisodeStore
    from teleworld.errors import TeleworldError
    from train.dataset import DataSpec, EpisodeArrays
    from train.state_model import StateTrainSettings, train_state_model

    known = {f.name for f in fields(StateTrainSettings)}
    unknown = sorted(set(values) - known)
    if refused:
        raise TeleworldError("a state model trains in minutes on the CPU: it takes neither --resume nor --device")
    if unknown:
        raise TeleworldError(f"a state model has no setting {', '.join(unknown)}; its settings are "
                             f"{', '.join(sorted(known))}")
    settings = StateTrainSettings(**values)
    store = EpisodeStore.open(data)
    frames = settings.observe == "frames"  # else it reads no frame
    arrays = EpisodeArrays(store, DataSpec.from_store(store), cache="auto" if frames else "chunks")
    result = train_state_model(arrays, out, settings)
    summary = f"checkpoint: {result['checkpoint']} ({result['steps']} steps, {result['seconds']:.0f} s)"
    if result["validation"]:
        v = result["validation"]
        summary += (f"; val state error {v['state']:.4f} vs copy-last {v['copy_last']:.4f} (standardised, "
                    f"{settings.unroll} steps open loop), reward {v['reward']:.4f}")
        if "encoder" in v:
            summary += f", encoder {v['encoder']:.4f} (the training mean scores 1)"
    Console().print(summary)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
