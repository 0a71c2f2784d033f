"""`teleworld data check-sim` (registered by teleop, which owns the scenes): re-simulate an episode from its first recorded state with its recorded actions.

If the recording is faithful (the action stored is the one applied, the state is complete) and the scene has not
changed, the re-simulated states equal the recorded ones; otherwise the first divergent step is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recorder.store import EpisodeStore
from teleop.scenes import load
from teleworld.errors import TeleworldError


@dataclass
class SimCheck:
    """Result of re-simulating one episode."""

    episode: int
    steps: int
    max_error: float  # largest |re-simulated - recorded| over qpos and qvel, all steps
    first_divergence: int | None  # first step whose error exceeds the tolerance
    error_at_divergence: float
    scene_changed: bool  # the registered scene's MJCF differs from the one stored with the data

    @property
    def ok(self) -> bool:
        return self.first_divergence is None


def check_sim(store: EpisodeStore, episode: int, tolerance: float = 1e-6) -> SimCheck:
    """Restore state[0], apply action[0..T-2] and compare qpos/qvel with the recording at every step."""
    info = store.info
    scene = load(info["scene"], image_size=tuple(info["image_size"]), cameras=tuple(info["cameras"]))
    try:
        if scene.get_state().shape[0] != info["nstate"]:
            raise TeleworldError(f"scene {info['scene']!r} now has a state of {scene.get_state().shape[0]} numbers; "
                                 f"the data was recorded with {info['nstate']}")
        ep = store.episode(episode, ["state", "action", "qpos", "qvel"])
        scene.reset(store.episode_info(episode).get("seed"))  # task setup (goal) that is not physics state
        scene.set_state(ep["state"][0])
        errors = np.zeros(len(ep["action"]))
        for t in range(1, len(ep["action"])):
            obs = scene.step(ep["action"][t - 1])
            errors[t] = max(np.abs(obs.qpos - ep["qpos"][t]).max(), np.abs(obs.qvel - ep["qvel"][t]).max())
        changed = scene.mjcf() != info.get("mjcf", scene.mjcf())
    finally:
        scene.close()
    bad = np.flatnonzero(errors > tolerance)
    first = int(bad[0]) if len(bad) else None
    return SimCheck(episode, len(errors), float(errors.max()), first,
                    float(errors[first]) if first is not None else 0.0, changed)
