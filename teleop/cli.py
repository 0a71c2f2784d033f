"""teleop's sub-commands: list scenes, teleoperate (teleop/operate.py), generate scripted episodes, and
`data check-sim` and `data add-goals` (both reset the scenes, which teleop owns)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from recorder.cli import STORE
from teleworld.errors import TeleworldError


def scenes() -> None:
    """List the registered scenes."""
    from teleop.scenes import SCENES, TAGS

    table = Table("scene", "tags", "description")
    for name, factory in sorted(SCENES.items()):
        table.add_row(name, ", ".join(TAGS.get(name, ())), (factory.__doc__ or "").strip().splitlines()[0])
    Console().print(table)


def check_sim(store: Path = STORE,
              episodes: list[int] = typer.Argument(None, help="Episodes to check (default: all active)."),
              tolerance: float = typer.Option(1e-6, help="Largest allowed |qpos, qvel| difference.")) -> None:
    """Re-simulate episodes from their first state with the recorded actions; report the first divergence."""
    from recorder import EpisodeStore
    from teleop.checksim import check_sim as run
    from teleworld.progress import progress_bar

    s = EpisodeStore.open(store)
    chosen = episodes or s.active_episodes().tolist()
    table = Table("episode", "steps", "max error", "first divergence", "error there", title="re-simulation")
    results = []
    with progress_bar() as bar:
        task = bar.add_task("check-sim", total=len(chosen), status="", unit="episodes")
        for e in chosen:
            results.append(run(s, e, tolerance))
            bar.update(task, advance=1, status=f"episode {e}")
    for r in results:
        table.add_row(str(r.episode), str(r.steps), f"{r.max_error:.2e}",
                      "-" if r.ok else str(r.first_divergence), f"{r.error_at_divergence:.2e}")
    Console().print(table)
    if any(r.scene_changed for r in results):
        Console(stderr=True).print("note: the registered scene's MJCF differs from the one stored with the data")
    bad = [r for r in results if not r.ok]
    if bad:
        raise TeleworldError(f"{len(bad)} of {len(results)} episodes diverge; first: episode {bad[0].episode} at "
                             f"step {bad[0].first_divergence} by {bad[0].error_at_divergence:.2e}")


def add_goals(store: Path = STORE) -> None:
    """Write each episode's goal (push's goal point, reacher's target) into a store recorded before goals were."""
    from recorder import EpisodeStore
    from teleop.goals import add_goals as run

    with EpisodeStore.open(store, mode="a") as s:
        written = run(s)
    typer.echo(f"{store}: goals written for {written} episodes" if written else f"{store}: every episode already "
               "has its goal")


def register(app: typer.Typer) -> None:
    from recorder.cli import data_app
    from teleop.generate import register as register_generate
    from teleop.operate import teleop

    data_app.command("check-sim")(check_sim)
    data_app.command("add-goals")(add_goals)

    app.command()(scenes)
    app.command()(teleop)
    register_generate(app)
