"""Gamepad operator through SDL's GameController API: one layout for Xbox, PlayStation and Switch pads."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from teleop.bindings import PAD_AXES, PAD_BUTTONS, Bindings, Command
from teleop.devices.base import Device
from teleop.scenes.base import ActionSpec, Observation
from teleworld.errors import TeleworldError

# Keep reading the pad while the window is unfocused (the operator clicked a terminal; headless runs). SDL reads
# this when its joystick subsystem starts, so it is set on import, before anyone calls pygame.init().
os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
AXIS_FULL = 32767.0  # SDL reports sticks in [-32768, 32767] and triggers in [0, 32767]


def apply_deadzone(value: float, deadzone: float) -> float:
    """0 inside the deadzone, then rescaled so the output still reaches +-1 at full deflection."""
    magnitude = abs(value)
    if magnitude <= deadzone:
        return 0.0
    return float(np.sign(value) * min(1.0, (magnitude - deadzone) / (1.0 - deadzone)))


class GamepadDevice(Device):
    """Reads the first game controller; survives hot-plug.

    Pulling the pad out mid-episode makes every following action zero (the robot holds still) until a pad
    is plugged in again; ``status`` says so for the HUD. Nothing recorded is lost: the session keeps going.
    """

    name = "gamepad"

    def __init__(self, action_spec: ActionSpec, bindings: Bindings):
        super().__init__(action_spec)
        self.bindings = bindings
        self._pad: Any = None
        self._pad_id: int | None = None

    def connect(self) -> None:
        import pygame
        from pygame._sdl2 import controller

        pygame.init()
        controller.init()
        self._pygame, self._controller = pygame, controller
        self._axis_ids = {name: getattr(pygame, f"CONTROLLER_AXIS_{name.upper()}") for name in PAD_AXES}
        self._button_ids = {name: getattr(pygame, f"CONTROLLER_BUTTON_{name.upper()}") for name in PAD_BUTTONS}
        self._buttons = {getattr(pygame, f"CONTROLLER_BUTTON_{b.upper()}"): c
                         for c, b in self.bindings.pad_commands.items()}
        index = next((i for i in range(controller.get_count()) if controller.is_controller(i)), None)
        if index is None:
            raise TeleworldError("no gamepad found: plug in a game controller (or use --device keyboard)")
        self._open(index)
        super().connect()

    def disconnect(self) -> None:
        self._close()
        super().disconnect()

    def handle_event(self, event: Any) -> Command | None:
        pygame = self._pygame
        if event.type == pygame.CONTROLLERDEVICEADDED and self._pad is None:
            self._open(event.device_index)
        elif event.type == pygame.CONTROLLERDEVICEREMOVED and event.instance_id == self._pad_id:
            self._close()
        elif event.type == pygame.CONTROLLERBUTTONDOWN and event.instance_id == self._pad_id:
            return self._buttons.get(event.button)
        return None

    @property
    def status(self) -> str:
        return "" if self._attached() else "gamepad unplugged: robot paused"

    def get_action(self, observation: Observation) -> np.ndarray:
        action = np.zeros(self.action_spec.size, np.float32)
        if not self._attached():
            return action
        index = {name: i for i, name in enumerate(self.action_spec.names)}
        for name, binding in self.bindings.pad_axes.items():
            raw = sum(sign * self._level(name) for sign, name in binding.terms)
            level = apply_deadzone(float(np.clip(raw, -1.0, 1.0)), binding.deadzone) * binding.scale
            low, high = self.action_spec.low[index[name]], self.action_spec.high[index[name]]
            action[index[name]] = level * high if level >= 0 else -level * low
        return self.action_spec.clip(action)

    def _level(self, name: str) -> float:
        """An axis in [-1, 1] (triggers [0, 1]), or a button as 0 / 1."""
        if name in self._axis_ids:
            return self._pad.get_axis(self._axis_ids[name]) / AXIS_FULL
        return float(self._pad.get_button(self._button_ids[name]))

    def _attached(self) -> bool:
        return self._pad is not None and bool(self._pad.attached())

    def _open(self, index: int) -> None:
        self._pad = self._controller.Controller(index)
        self._pad_id = self._pad.as_joystick().get_instance_id()

    def _close(self) -> None:
        if self._pad is not None:
            self._pad.quit()
        self._pad, self._pad_id = None, None
