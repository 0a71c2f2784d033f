"""Keyboard operator: key state from KEYDOWN/KEYUP events, bound keys per action, smooth ramping."""

from __future__ import annotations

from typing import Any

import numpy as np

from teleop.bindings import Bindings, Command
from teleop.devices.base import Device
from teleop.scenes.base import ActionSpec, Observation
from teleworld.errors import TeleworldError


class KeyboardDevice(Device):
    """Each bound action goes toward -1 / +1 of its range while its key is held and back to 0 when released.

    The output moves at most ``1 / (ramp_time * control_rate)`` of full scale per control step, so a tap is a
    nudge and a hold is a smooth push. Key state is kept from events because posted events (tests, scripts)
    do not change ``pygame.key.get_pressed()``.
    """

    name = "keyboard"

    def __init__(self, action_spec: ActionSpec, bindings: Bindings, control_rate: float):
        super().__init__(action_spec)
        self.bindings = bindings
        steps = bindings.ramp_time * control_rate
        self.ramp_step = 1.0 / steps if steps > 0 else np.inf
        self._held: set[int] = set()
        self._axes: list[tuple[int, int, int]] = []  # (action index, negative key code, positive key code)
        self._commands: dict[int, Command] = {}
        self._level = np.zeros(action_spec.size)

    def connect(self) -> None:
        import pygame

        index = {name: i for i, name in enumerate(self.action_spec.names)}
        self._axes = [(index[a], _key_code(pygame, neg, a), _key_code(pygame, pos, a))
                      for a, (neg, pos) in self.bindings.keys.items()]
        self._commands = {_key_code(pygame, key, c.value): c for c, key in self.bindings.key_commands.items()}
        self._keydown, self._keyup = pygame.KEYDOWN, pygame.KEYUP
        super().connect()

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        self._level[:] = 0.0

    def handle_event(self, event: Any) -> Command | None:
        if event.type == self._keydown:
            self._held.add(event.key)
            return self._commands.get(event.key)
        if event.type == self._keyup:
            self._held.discard(event.key)
        return None

    def get_action(self, observation: Observation) -> np.ndarray:
        target = np.zeros_like(self._level)
        for i, neg, pos in self._axes:
            target[i] = (pos in self._held) - (neg in self._held)
        self._level += np.clip(target - self._level, -self.ramp_step, self.ramp_step)
        low, high = np.asarray(self.action_spec.low), np.asarray(self.action_spec.high)
        return np.where(self._level >= 0, self._level * high, -self._level * low).astype(np.float32)


def _key_code(pygame: Any, key: str, what: str) -> int:
    try:
        return pygame.key.key_code(key)
    except ValueError:
        raise TeleworldError(f"unknown key name {key!r} bound to {what}") from None
