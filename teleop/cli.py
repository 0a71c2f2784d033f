"""teleop's sub-commands: list scenes, generate scripted episodes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from teleworld.progress import progress_bar


def scenes() -> None:
    """List the registered scenes."""
    from teleop.scenes import SCENES, TAGS

    table = Table("scene", "tags", "description")
    for name, factory in sorted(SCENES.items()):
        table.add_row(name, ", ".join(TAGS.get(name, ())), (factory.__doc__ or "").strip().splitlines()[0])
    Console().print(table)


def generate(
    out: Path = typer.Option(..., "--out", help="Zarr store to create (or append to with --append)."),
    scene: str = typer.Option("push", help="Scene name (see `teleworld scenes`)."),
    episodes: int = typer.Option(20, min=1, help="Episodes to record."),
    steps: int = typer.Option(120, min=1, help="Control steps per episode."),
    seed: int = typer.Option(0, help="Seed of the first episode; episode i uses seed + i."),
    image_size: int = typer.Option(64, help="Square camera frame side in pixels."),
    append: bool = typer.Option(False, help="Append to an existing store instead of creating one."),
) -> None:
    """Record episodes driven by the scene's scripted operator (no human needed)."""
    from recorder import EpisodeStore
    from teleop.devices.scripted import scripted_operator
    from teleop.loop import collect
    from teleop.scenes import load

    sim = load(scene, image_size=(image_size, image_size))
    store = EpisodeStore.open(out, mode="a") if append else EpisodeStore.create(out, sim.info())
    with store, progress_bar() as progress:
        task = progress.add_task(f"record {scene}", total=episodes, status="")
        collect(sim, scripted_operator(sim), store, episodes, steps, seed, lambda: progress.advance(task))
    Console().print(f"{store.num_episodes} episodes, {store.num_steps} steps in {out}")


def register(app: typer.Typer) -> None:
    app.command()(scenes)
    app.command()(generate)
