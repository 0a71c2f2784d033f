"""recorder's sub-commands: `teleworld data ...`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(help="Inspect and manage episode stores.", no_args_is_help=True)


@data_app.command()
def info(store: Path = typer.Argument(..., help="Path of a teleworld Zarr store."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Summarise a store: scene, cameras, episodes, steps, uncommitted data."""
    from recorder import EpisodeStore

    s = EpisodeStore.open(store)
    meta = {k: v for k, v in s.info.items() if k != "mjcf"}
    summary = {**meta, "episodes": s.num_episodes, "steps": s.num_steps, "uncommitted_steps": s.uncommitted_steps(),
               "episode_lengths": [s.episode_info(i)["length"] for i in range(s.num_episodes)]}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table("field", "value", title=str(store))
    for key in ("scene", "schema_version", "control_rate", "cameras", "image_size", "episodes", "steps",
                "uncommitted_steps", "mujoco_version"):
        table.add_row(key, str(summary.get(key)))
    table.add_row("actions", ", ".join(meta["action_spec"]["names"]))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
