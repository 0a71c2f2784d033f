"""`teleworld data add-goals`: write each episode's goal into a store recorded before goals were.

A goal (push's goal point, reacher's target) is drawn at reset from the episode's seed, so resetting the registered
scene with that seed recovers it. The recovery is checked: the reset scene must reproduce the episode's recorded
first reward, which depends on the goal.
"""

from __future__ import annotations

import numpy as np

from recorder.store import EpisodeStore
from teleop.scenes import load
from teleworld.errors import TeleworldError

REWARD_TOLERANCE = 1e-4  # recorded float32 reward vs the one the reset scene computes


def add_goals(store: EpisodeStore) -> int:
    """Write ``goal`` into the info of every committed episode that lacks it; returns how many were written."""
    info = store.info
    missing = [e for e in range(store.num_episodes) if "goal" not in store.episode_info(e)]
    if not missing:
        return 0
    options = {"randomize": True} if "randomization" in info else {}  # reset(seed) redraws the episode's draw
    scene = load(info["scene"], image_size=tuple(info["image_size"]), cameras=tuple(info["cameras"]), **options)
    try:
        goals = {}
        for episode in missing:
            seed = store.episode_info(episode).get("seed")
            if seed is None:
                raise TeleworldError(f"episode {episode} of {store.path} has no seed: its goal cannot be recovered")
            scene.reset(int(seed))
            recorded = float(store.episode(episode, ["reward"])["reward"][0])
            if abs(scene.reward() - recorded) > REWARD_TOLERANCE:
                raise TeleworldError(f"episode {episode} of {store.path}: the scene reset with seed {seed} gives "
                                     f"reward {scene.reward():.5f}, the recording {recorded:.5f}; the scene changed "
                                     "since, so its goal cannot be recovered")
            goals[episode] = np.asarray(scene.goal(), dtype=np.float64).tolist()
    finally:
        scene.close()
    for episode, goal in goals.items():  # written only once every episode checked out
        store.update_episode_info(episode, goal=goal)
    return len(goals)
