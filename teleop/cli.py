"""teleop's sub-commands: list scenes, teleoperate (teleop/operate.py), generate scripted episodes."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def scenes() -> None:
    """List the registered scenes."""
    from teleop.scenes import SCENES, TAGS

    table = Table("scene", "tags", "description")
    for name, factory in sorted(SCENES.items()):
        table.add_row(name, ", ".join(TAGS.get(name, ())), (factory.__doc__ or "").strip().splitlines()[0])
    Console().print(table)


def register(app: typer.Typer) -> None:
    from teleop.generate import register as register_generate
    from teleop.operate import teleop

    app.command()(scenes)
    app.command()(teleop)
    register_generate(app)
