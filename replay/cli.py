"""replay's sub-commands: `teleworld replay`, `view` and `dream`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def replay_command(
    model: Path = typer.Option(..., "--model", help="Run directory or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="Episode store to replay."),
    out: Path = typer.Option(..., "--out", help="Directory for report.html, metrics.json/.csv, plots, videos."),
    context: int = typer.Option(5, help="Real frames observed before imagining (K)."),
    horizon: int = typer.Option(50, help="Open-loop steps imagined with the real actions (H)."),
    windows: int = typer.Option(16, help="Windows drawn from held-out episodes."),
    seed: int = typer.Option(0, help="Seed of the window draw, the action shuffle and the bootstrap."),
    video_windows: int = typer.Option(4, help="Windows shown in the rollout videos."),
    all_episodes: bool = typer.Option(False, help="Draw from every episode (a store the model never saw), "
                                                  "not only the run's held-out ones."),
    simulator: bool = typer.Option(False, help="Also re-run the scene from the recorded states with the recorded "
                                               "actions (a check of the data, shown as a fourth video row)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Compare imagined rollouts with the real ones and with baselines on held-out episodes."""
    from replay.evaluate import evaluate
    from replay.report import summary_lines
    from train.loop import resolve_device

    metrics = evaluate(model, data, out, context, horizon, windows, seed, resolve_device(device),
                       episodes="all" if all_episodes else None, video_windows=video_windows, simulator=simulator)
    console = Console()
    for line in summary_lines(metrics):
        console.print(line)
    console.print(metrics["action_sensitivity"]["verdict"])
    if metrics.get("simulator_scene_changed"):
        console.print("warning: the scene has changed since this data was recorded; the simulator cannot match it")
    console.print(f"report: {out / 'report.html'}")


def view_command(
    model: Path = typer.Option(..., "--model", help="Run directory or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="Episode store to browse."),
    context: int = typer.Option(5, help="Initial context length K."),
    horizon: int = typer.Option(50, help="Initial horizon H."),
    scale: int = typer.Option(4, min=1, help="Screen pixels per image pixel."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Browse real vs imagined rollouts in a window (keys are listed on screen)."""
    from replay.view import run_view
    from train.loop import resolve_device

    run_view(model, data, context, horizon, scale, resolve_device(device))


def dream_command(
    model: Path = typer.Option(..., "--model", help="Run directory or checkpoint file."),
    scene: str = typer.Option(None, "--scene", help="Scene to drive; default: the one the model was trained on."),
    seed: int = typer.Option(0, help="Seed of the scene's initial state."),
    operator: str = typer.Option("keyboard", "--operator", help="keyboard or gamepad."),
    bindings: Path = typer.Option(None, help="TOML file overriding the scene's default bindings (docs/teleop.md)."),
    scale: int = typer.Option(4, min=1, help="Screen pixels per image pixel."),
    device: str = typer.Option("cpu", help="Torch device of the model: cpu, cuda or auto."),
) -> None:
    """Drive the simulator and the world model side by side with the keyboard or a gamepad; R resyncs."""
    from replay.dream import run_dream
    from train.loop import resolve_device

    run_dream(model, scene, seed, scale, resolve_device(device), operator, bindings)


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_command)
    app.command("view")(view_command)
    app.command("dream")(dream_command)
