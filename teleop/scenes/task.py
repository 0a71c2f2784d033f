"""The task half of a scene, in the manner of dm_control's Physics/Task split.

A ``Scene`` is the physics: it owns the MuJoCo model and data, applies actions, steps, renders, reads contacts and
saves or restores the state. A ``Task`` says what an episode on it means: how it starts, what it rewards, when it
is done and what its goal is. Every task method takes the scene it runs on, so one task class serves any scene
built for it and holds only the episode's own draws (a goal the state does not hold).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from teleworld.errors import TeleworldError

if TYPE_CHECKING:
    from teleop.scenes.base import Scene


class Task(ABC):
    """How an episode starts, what it rewards, when it succeeds and what its goal is."""

    @abstractmethod
    def initialize(self, physics: Scene, rng: np.random.Generator) -> None:
        """Draw the episode's initial state into ``physics.data`` (called by reset before mj_forward)."""

    def reward(self, physics: Scene) -> float:
        """Reward of the current state (0 by default)."""
        return 0.0

    def success(self, physics: Scene) -> bool | None:
        """Whether the task is done in the current state; None for a task without a success label (the default)."""
        return None

    def goal(self, physics: Scene) -> np.ndarray:
        """The episode's goal, drawn at reset, that the reward depends on but the state may not hold (push's goal
        point, which no camera shows); (D,) float64, empty for a task without one. Recorded in episode info."""
        return np.zeros(0)

    def goal_distance(self, physics: Scene) -> float:
        """How far the current state is from the goal, m (NaN for a task without a goal)."""
        return float("nan")

    def set_goal(self, physics: Scene, goal: np.ndarray) -> np.ndarray:
        """Move the episode's goal to ``goal`` (clipped to where the task may put it); returns the goal set."""
        raise TeleworldError(f"scene {physics.name!r} has no goal to move")
