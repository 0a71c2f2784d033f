"""The `teleworld` command: one typer app; each package registers its own sub-commands."""

from __future__ import annotations

import sys

import typer

from teleworld.errors import TeleworldError

app = typer.Typer(
    help="Teleoperate MuJoCo robots, record Zarr episodes, train world models, replay imagined vs real.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from recorder.cli import register as register_recorder
    from replay.cli import register as register_replay
    from teleop.cli import register as register_teleop
    from train.cli import register as register_train

    for register in (register_teleop, register_recorder, register_train, register_replay):
        register(app)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1, no traceback."""
    _register()
    try:
        app(standalone_mode=False)
    except TeleworldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
