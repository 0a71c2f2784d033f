"""Operator bindings: which key or gamepad axis drives each action, and which button issues each command.

Defaults come from the scene (``Scene.key_bindings`` / ``Scene.pad_bindings``) and from ``KEY_COMMANDS`` /
``PAD_COMMANDS`` below; a TOML file overrides any of them (see docs/teleop.md)::

    [keyboard]
    ramp_time = 0.25                      # seconds from rest to full scale
    [keyboard.axes]
    pusher_vx = ["left", "right"]         # key for -1, key for +1
    [keyboard.commands]
    record = "r"
    [gamepad.axes]
    pusher_vy = { axis = "-lefty", deadzone = 0.15, scale = 0.5 }
    [gamepad.commands]
    record = "a"
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from teleop.scenes.base import Scene
from teleworld.errors import TeleworldError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class Command(str, Enum):
    """Episode control, issued by any device."""

    RECORD = "record"  # start recording a new episode; while recording, stop and save it
    SAVE = "save"  # stop and save the open episode (also answers the quit prompt)
    DISCARD = "discard"  # stop and drop the open episode (also answers the quit prompt)
    RERECORD = "rerecord"  # drop the open episode and record again from the same start (seed)
    RESET = "reset"  # reset the scene to a new start (refused while recording)
    PAUSE = "pause"  # freeze the robot and the recording
    QUIT = "quit"  # leave; an open episode is saved or discarded as the operator chooses
    HELP = "help"  # show or hide the key help


KEY_COMMANDS = {
    Command.RECORD: "r",
    Command.SAVE: "return",
    Command.DISCARD: "backspace",
    Command.RERECORD: "y",
    Command.RESET: "tab",
    Command.PAUSE: "space",
    Command.QUIT: "escape",
    Command.HELP: "h",
}
PAD_COMMANDS = {
    Command.RECORD: "a",
    Command.SAVE: "x",
    Command.DISCARD: "b",
    Command.RERECORD: "y",
    Command.RESET: "back",
    Command.PAUSE: "start",
    Command.QUIT: "guide",
    Command.HELP: "dpad_up",
}
PAD_AXES = ("leftx", "lefty", "rightx", "righty", "triggerleft", "triggerright")
PAD_BUTTONS = (
    "a", "b", "x", "y", "back", "guide", "start", "leftstick", "rightstick", "leftshoulder", "rightshoulder",
    "dpad_up", "dpad_down", "dpad_left", "dpad_right",
)
FALLBACK_KEYS = (("left", "right"), ("down", "up"), ("a", "d"), ("s", "w"), ("j", "l"), ("k", "i"), ("q", "e"))
DEADZONE = 0.1
RAMP_TIME = 0.25  # s


@dataclass(frozen=True)
class AxisBinding:
    """An action driven by a gamepad axis: ``axis`` ("-lefty" inverts; "a-b" is the difference of two axes). A
    button may stand for an axis (0 released, 1 pressed): "rightshoulder-leftshoulder" is +1, -1 or 0."""

    axis: str
    deadzone: float = DEADZONE
    scale: float = 1.0

    @property
    def terms(self) -> list[tuple[float, str]]:
        """(sign, axis name) pairs whose sum is the raw value."""
        spec = self.axis.strip()
        sign, rest = (-1.0, spec[1:]) if spec.startswith("-") else (1.0, spec)
        plus, _, minus = rest.partition("-")
        return [(sign, plus)] + ([(-sign, minus)] if minus else [])


@dataclass
class Bindings:
    """Everything an operator device needs to turn inputs into actions and commands."""

    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # action -> (key for -1, key for +1)
    key_commands: dict[Command, str] = field(default_factory=lambda: dict(KEY_COMMANDS))
    ramp_time: float = RAMP_TIME
    pad_axes: dict[str, AxisBinding] = field(default_factory=dict)
    pad_commands: dict[Command, str] = field(default_factory=lambda: dict(PAD_COMMANDS))

    def help_lines(self, device: str) -> list[str]:
        """One line per binding, for the HUD's help overlay."""
        if device == "gamepad":
            axes = [f"{a}: {b.axis}" for a, b in self.pad_axes.items()]
            return axes + [f"{c.value}: {b}" for c, b in self.pad_commands.items()]
        axes = [f"{a}: {neg} / {pos}" for a, (neg, pos) in self.keys.items()]
        return axes + [f"{c.value}: {k}" for c, k in self.key_commands.items()]


def default_bindings(scene: Scene) -> Bindings:
    """The scene's own bindings; actions it does not bind get spare key pairs and no gamepad axis."""
    names = scene.action_spec.names
    keys = {a: (neg, pos) for a, neg, pos in scene.key_bindings}
    spare = [pair for pair in FALLBACK_KEYS if not set(pair) & {k for p in keys.values() for k in p}]
    for name in names:
        if name not in keys and spare:
            keys[name] = spare.pop(0)
    bindings = Bindings(keys=keys, pad_axes={a: AxisBinding(axis) for a, axis in scene.pad_bindings})
    _check_pad_buttons(bindings.pad_axes, bindings.pad_commands)
    return bindings


def load_bindings(path: str | Path | None, scene: Scene) -> Bindings:
    """The scene's defaults overridden by a TOML file (None: defaults only). Bad files raise TeleworldError."""
    bindings = default_bindings(scene)
    if path is None:
        return bindings
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TeleworldError(f"bindings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise TeleworldError(f"bindings file {path} is not valid TOML: {exc}") from None
    try:
        return _apply(doc, bindings, scene)
    except (TypeError, ValueError, KeyError) as exc:
        raise TeleworldError(f"bindings file {path}: {exc}") from None


def _apply(doc: dict, bindings: Bindings, scene: Scene) -> Bindings:
    _only(doc, {"keyboard", "gamepad"}, "top-level table")
    keyboard, gamepad = doc.get("keyboard", {}), doc.get("gamepad", {})
    _only(keyboard, {"ramp_time", "axes", "commands"}, "[keyboard] key")
    _only(gamepad, {"deadzone", "axes", "commands"}, "[gamepad] key")
    actions = set(scene.action_spec.names)
    keys = dict(bindings.keys)
    for action, pair in keyboard.get("axes", {}).items():
        _only({action}, actions, f"action of scene {scene.name!r}")
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(k, str) for k in pair)):
            raise ValueError(f"keyboard.axes.{action} must be two key names [negative, positive], got {pair!r}")
        keys[action] = (pair[0], pair[1])
    ramp_time = float(keyboard.get("ramp_time", bindings.ramp_time))
    if ramp_time < 0:
        raise ValueError(f"keyboard.ramp_time must be >= 0, got {ramp_time}")
    deadzone = float(gamepad.get("deadzone", DEADZONE))
    pad_axes = {a: replace(b, deadzone=deadzone) for a, b in bindings.pad_axes.items()}
    for action, spec in gamepad.get("axes", {}).items():
        _only({action}, actions, f"action of scene {scene.name!r}")
        spec = {"axis": spec} if isinstance(spec, str) else dict(spec)
        _only(spec, {"axis", "deadzone", "scale"}, f"gamepad.axes.{action} field")
        pad_axes[action] = AxisBinding(str(spec["axis"]), float(spec.get("deadzone", deadzone)),
                                       float(spec.get("scale", 1.0)))
    for binding in pad_axes.values():
        for _sign, axis in binding.terms:
            _only({axis}, set(PAD_AXES) | set(PAD_BUTTONS), "gamepad axis or button")
        if not 0 <= binding.deadzone < 1:
            raise ValueError(f"gamepad deadzone must be in [0, 1), got {binding.deadzone}")
    pad_commands = {**bindings.pad_commands, **_commands(gamepad.get("commands", {}), "gamepad")}
    for button in pad_commands.values():
        _only({button}, set(PAD_BUTTONS), "gamepad button")
    _check_pad_buttons(pad_axes, pad_commands)
    return Bindings(
        keys=keys,
        key_commands={**bindings.key_commands, **_commands(keyboard.get("commands", {}), "keyboard")},
        ramp_time=ramp_time,
        pad_axes=pad_axes,
        pad_commands=pad_commands,
    )


def _check_pad_buttons(pad_axes: dict[str, AxisBinding], pad_commands: dict[Command, str]) -> None:
    """A button drives an action or issues a command, never both."""
    for action, binding in pad_axes.items():
        for _sign, name in binding.terms:
            clash = [c.value for c, button in pad_commands.items() if button == name]
            if clash:
                raise ValueError(f"gamepad button {name!r} drives {action} and issues {clash[0]}; bind one elsewhere")


def _commands(table: dict, section: str) -> dict[Command, str]:
    _only(table, {c.value for c in Command}, f"{section}.commands name")
    return {Command(name): str(value) for name, value in table.items()}


def _only(names, allowed: set[str], what: str) -> None:
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}")
