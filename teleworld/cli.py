"""The `teleworld` command: one typer app; each package registers its own sub-commands."""

from __future__ import annotations

import sys
import tempfile
import traceback

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

    from teleworld.demo import demo_command

    for register in (register_teleop, register_recorder, register_train, register_replay):
        register(app)
    app.command("demo")(demo_command)  # the whole path on top of every stage


DEBUG_ENV = "TELEWORLD_DEBUG"
_settings = {"debug": False}


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", envvar=DEBUG_ENV,
                               help=f"Print the full traceback of an error (or set {DEBUG_ENV}=1)."),
) -> None:
    _settings["debug"] = debug


def main() -> None:
    """Entry point: typer reports usage errors (exit 2); every other error is one line on stderr (exit 1)."""
    try:
        _register()
        app()  # standalone mode: typer prints usage errors itself and exits
    except TeleworldError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {_first_line(exc)}; {_keep_traceback()}")


def _fail(message: str) -> None:
    """Print the traceback under --debug, then the one error line; exit 1."""
    if _settings["debug"]:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "(no message)"


def _keep_traceback() -> str:
    """Write the current traceback to a temp file; say where (or how to see it when even that fails)."""
    if _settings["debug"]:
        return "traceback above"
    try:
        with tempfile.NamedTemporaryFile("w", prefix="teleworld-error-", suffix=".txt", delete=False) as f:
            traceback.print_exc(file=f)
    except OSError as exc:
        return f"the traceback could not be saved ({exc.strerror}); rerun with --debug to see it"
    return f"full traceback in {f.name} (or rerun with --debug)"
