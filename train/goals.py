"""Task goals: the vector a scene's reward depends on, which its camera may not show.

push rewards minus the box's distance to a goal drawn at reset and drawn nowhere in the frame; reacher-hard's target
is drawn, but its position is still the task. A reward head conditioned on the goal can learn either reward, and a
planner can then be given any goal. The recorder stores each episode's goal (``Scene.goal()``) in its info; stores
recorded before that get theirs with ``teleworld data add-goals``.
"""

from __future__ import annotations

import numpy as np

from teleworld.errors import TeleworldError


def episode_goals(store, episodes: np.ndarray) -> np.ndarray:
    """(len(episodes), D) float32 goals of recorded episodes, read from their info (D = 0: the scene has none)."""
    goals = []
    for episode in episodes:
        goal = store.episode_info(int(episode)).get("goal")
        if goal is None:
            raise TeleworldError(f"episode {episode} of {store.path} has no recorded goal (recorded before goals "
                                 f"were); run `teleworld data add-goals {store.path}`, or train without a reward head "
                                 "(--set reward_weight=0)")
        goals.append(goal)
    if not goals:
        return np.zeros((0, 0), np.float32)
    if len({len(g) for g in goals}) > 1:
        raise TeleworldError(f"{store.path}: episodes record goals of different sizes")
    return np.asarray(goals, np.float32).reshape(len(episodes), -1)
