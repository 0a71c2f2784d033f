"""`teleworld teleop`: open a window, drive a scene with a keyboard, gamepad or recorded episode, record."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from teleworld.errors import TeleworldError

if TYPE_CHECKING:
    from teleop.bindings import Bindings, Command
    from teleop.devices.base import Device
    from teleop.scenes.base import Scene


class DeviceKind(str, Enum):
    keyboard = "keyboard"
    gamepad = "gamepad"
    replay = "replay"


class OnQuit(str, Enum):
    ask = "ask"
    save = "save"
    discard = "discard"


def teleop(
    out: Path = typer.Option(..., "--out", help="Zarr store to record into (created; see --append)."),
    scene: str = typer.Option("push", help="Scene name (see `teleworld scenes`)."),
    device: DeviceKind = typer.Option(DeviceKind.keyboard, help="What drives the robot."),
    bindings: Path = typer.Option(None, help="TOML file overriding the scene's default bindings."),
    rate: float = typer.Option(None, help="Control rate in Hz, up to 100 (default: the scene's, 20 for most)."),
    image_size: int = typer.Option(64, help="Square camera frame side in pixels (what is recorded)."),
    view: int = typer.Option(512, help="Side of the camera view in the window, pixels."),
    seed: int = typer.Option(0, help="Seed of the first episode's start; each new start uses the next seed."),
    append: bool = typer.Option(False, help="Append to an existing store instead of creating one."),
    on_quit: OnQuit = typer.Option(OnQuit.ask, help="What quitting does with an open episode."),
    replay_from: Path = typer.Option(None, help="Store holding the episode to replay (default: --out)."),
    episode: int = typer.Option(0, help="Episode to replay with --device replay."),
) -> None:
    """Teleoperate a scene in a window and record episodes (keys: press h in the window)."""
    from recorder import EpisodeStore
    from teleop.bindings import load_bindings
    from teleop.scenes import load
    from teleop.session import TeleopSession
    from teleop.window import Window

    sim = load(scene, image_size=(image_size, image_size), control_rate=rate)
    keys = load_bindings(bindings, sim)
    operator, helpers = build_devices(device, sim, keys, replay_from or out, episode)
    window = Window(f"teleworld teleop: {scene}", view)
    window.open()
    try:
        for d in (operator, *helpers):
            d.connect()  # a missing gamepad fails here, before any store is created
        store = EpisodeStore.open(out, mode="a") if append else EpisodeStore.create(out, sim.info())
        with store:
            check_compatible(store.info, sim.info())
            session = TeleopSession(sim, operator, store, window, command_devices=helpers, seed=seed,
                                    on_quit=on_quit.value, help_lines=tuple(keys.help_lines(device.value)),
                                    help_hint=help_hint(keys, device), command_keys=command_keys(keys, device))
            session.run()
            saved = [future.result() for future in session.saved]
    finally:
        for d in (operator, *helpers):
            d.disconnect()
        window.close()
    print(f"saved {len(saved)} episodes this session; {out} now holds {store.num_episodes}", file=sys.stderr)


def build_devices(
    kind: DeviceKind, scene: Scene, bindings: Bindings, replay_store: Path, episode: int
) -> tuple[Device, tuple[Device, ...]]:
    """The operator device and the command-only devices beside it (the keyboard always issues commands)."""
    from recorder import EpisodeStore
    from teleop.devices.gamepad import GamepadDevice
    from teleop.devices.keyboard import KeyboardDevice
    from teleop.devices.replay import ReplayDevice

    keyboard = KeyboardDevice(scene.action_spec, bindings, scene.control_rate)
    if kind is DeviceKind.keyboard:
        return keyboard, ()
    if kind is DeviceKind.gamepad:
        return GamepadDevice(scene.action_spec, bindings), (keyboard,)
    return ReplayDevice(scene.action_spec, EpisodeStore.open(replay_store), episode, scene.control_rate), (keyboard,)


def command_keys(bindings: Bindings, kind: DeviceKind) -> dict[Command, str]:
    """Each command's key as the HUD names it (with the pad button when a gamepad drives)."""
    keys = dict(bindings.key_commands)
    if kind is DeviceKind.gamepad:
        keys = {command: f"{key} / pad {bindings.pad_commands[command]}" for command, key in keys.items()}
    return keys


def help_hint(bindings: Bindings, kind: DeviceKind) -> str:
    """The HUD line that says how to open the key help."""
    from teleop.bindings import Command

    return f"help: {command_keys(bindings, kind)[Command.HELP]}"


def check_compatible(stored: dict, live: dict) -> None:
    """Refuse to append episodes whose scene, cameras, image size or rate differ from the store's."""
    for key in ("scene", "cameras", "image_size", "control_rate", "action_spec"):
        if stored.get(key) != live.get(key):
            raise TeleworldError(f"store holds {key}={stored.get(key)!r} but this session has {live.get(key)!r}")
