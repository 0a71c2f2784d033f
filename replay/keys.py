"""Operator input for dream teleop: key state kept from events (posted events do not change
``pygame.key.get_pressed()``) and gamepad axes from JOYAXISMOTION events.

Action 0 follows left/right (or A/D, or the left stick's x), action 1 down/up (or S/W, or the left stick's y,
inverted); further actions use J/L, K/I, U/O. To be replaced by teleop/devices' keyboard and gamepad devices once
those are in.
"""

from __future__ import annotations

import numpy as np
import pygame

AXIS_KEYS = (
    ((pygame.K_LEFT, pygame.K_a), (pygame.K_RIGHT, pygame.K_d)),
    ((pygame.K_DOWN, pygame.K_s), (pygame.K_UP, pygame.K_w)),
    ((pygame.K_j,), (pygame.K_l,)),
    ((pygame.K_k,), (pygame.K_i,)),
    ((pygame.K_u,), (pygame.K_o,)),
)
STICK = ((0, 1.0), (1, -1.0))  # (joystick axis, sign) for actions 0 and 1
DEADZONE = 0.1


class OperatorInput:
    """Turns key and joystick events into an action in [-1, 1] per dimension."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim
        self.held: set[int] = set()
        self.stick: dict[int, float] = {}

    def handle(self, event: pygame.event.Event) -> None:
        """Track one event."""
        if event.type == pygame.KEYDOWN:
            self.held.add(event.key)
        elif event.type == pygame.KEYUP:
            self.held.discard(event.key)
        elif event.type == pygame.JOYAXISMOTION:
            self.stick[event.axis] = float(event.value)

    def action(self) -> np.ndarray:
        """Keys give -1 / 0 / +1; a stick outside the dead zone overrides them."""
        out = np.zeros(self.action_dim, np.float32)
        for i, (neg, pos) in enumerate(AXIS_KEYS[: self.action_dim]):
            out[i] = any(k in self.held for k in pos) - any(k in self.held for k in neg)
        for i, (axis, sign) in enumerate(STICK[: self.action_dim]):
            value = self.stick.get(axis, 0.0)
            if abs(value) > DEADZONE:
                out[i] = sign * value
        return np.clip(out, -1.0, 1.0)
