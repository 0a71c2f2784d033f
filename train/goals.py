"""Task goals for the reward head: the vector a scene's reward depends on, which its camera may not show.

push rewards minus the box's distance to a goal point drawn at reset and drawn by no camera; reacher-hard's target is
drawn, but its position is still the task. A reward head that sees the goal can learn either reward, and a planner can
then be given the goal of a new episode (``Scene.goal()``). Stores record each episode's goal in its info; for one
recorded before they did, the goal is recovered by resetting the scene with the episode's seed (the goal is drawn
from the seed alone), checked against the recorded first reward.
"""

from __future__ import annotations

import numpy as np

from teleworld.errors import TeleworldError

REWARD_TOLERANCE = 1e-4  # recorded float32 reward vs the one the reset scene computes


def scene_goal(scene) -> np.ndarray:
    """The goal of the scene's current episode, (D,) float32 (D = 0 for a task without one)."""
    return np.asarray(scene.goal(), dtype=np.float32)


def episode_goals(store, episodes: np.ndarray, first_rewards: np.ndarray) -> np.ndarray:
    """(len(episodes), D) goals of recorded episodes: from their info, or recovered by resetting the scene.

    ``first_rewards``: each episode's recorded reward at step 0, which a reset scene must reproduce."""
    infos = [store.episode_info(int(e)) for e in episodes]
    if all("goal" in info for info in infos):
        goals = [np.asarray(info["goal"], np.float32) for info in infos]
        if len({g.shape for g in goals}) > 1:
            raise TeleworldError(f"the episodes of {store.path} record goals of different sizes")
        return np.stack(goals) if goals else np.zeros((0, 0), np.float32)
    from teleop.scenes import load

    info = store.info
    options = {"randomize": True} if "randomization" in info else {}  # reset(seed) redraws the episode's draw
    scene = load(info["scene"], image_size=tuple(info["image_size"]), cameras=tuple(info["cameras"]), **options)
    goals = []
    try:
        for episode, ep_info, reward in zip(episodes, infos, first_rewards):
            if "goal" in ep_info:
                goals.append(np.asarray(ep_info["goal"], np.float32))
                continue
            seed = ep_info.get("seed")
            if seed is None:
                raise TeleworldError(f"episode {episode} of {store.path} records no goal and no seed, so the reward "
                                     "head cannot be told its goal; train with --set reward_weight=0")
            scene.reset(int(seed))
            if abs(scene.reward() - float(reward)) > REWARD_TOLERANCE:
                raise TeleworldError(f"episode {episode} of {store.path}: resetting {info['scene']} with seed {seed} "
                                     f"gives reward {scene.reward():.4f}, the store recorded {float(reward):.4f}; its "
                                     "goal cannot be recovered (train with --set reward_weight=0)")
            goals.append(scene_goal(scene))
    finally:
        scene.close()
    return np.stack(goals) if goals else np.zeros((0, 0), np.float32)
