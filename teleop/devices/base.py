"""The input-device interface shared by keyboard, gamepad, scripted and replay operators."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from teleop.bindings import Command
from teleop.scenes.base import ActionSpec, Observation


class Device(ABC):
    """Produces one action per control step. Use as a context manager to guarantee disconnect.

    Interactive devices also turn window events into episode commands (``handle_event``) and report
    their health for the HUD (``status``).
    """

    name: str = "device"
    episode_seed: int | None = None  # a device that replays an episode asks for that episode's start

    def __init__(self, action_spec: ActionSpec):
        self.action_spec = action_spec  # valid before connect()
        self.is_connected = False

    def connect(self) -> None:
        """Open the device (windows, joysticks...)."""
        self.is_connected = True

    def disconnect(self) -> None:
        """Release the device."""
        self.is_connected = False

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        """Called at the start of each episode with its first observation."""

    @abstractmethod
    def get_action(self, observation: Observation) -> np.ndarray:
        """The action for this step, shaped like action_spec."""

    def handle_event(self, event: Any) -> Command | None:
        """Update input state from one pygame event; return the command it issues, if any."""
        return None

    @property
    def status(self) -> str:
        """A short health note for the HUD ("" when all is well)."""
        return ""

    @property
    def done(self) -> bool:
        """True when the device has nothing more to play (a finished replay)."""
        return False

    def __enter__(self) -> "Device":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
