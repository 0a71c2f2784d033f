"""The input-device interface shared by keyboard, gamepad, scripted and replay operators."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from teleop.scenes.base import ActionSpec, Observation


class Device(ABC):
    """Produces one action per control step. Use as a context manager to guarantee disconnect."""

    name: str = "device"

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

    def __enter__(self) -> "Device":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
