"""Replay operator: plays back the actions of a recorded episode, from that episode's start."""

from __future__ import annotations

import numpy as np

from recorder import EpisodeStore
from teleop.devices.base import Device
from teleop.scenes.base import ActionSpec, Observation
from teleworld.errors import TeleworldError


class ReplayDevice(Device):
    """Emits ``data/action`` of episode ``episode`` step by step, then zeros (``done`` turns True).

    ``episode_seed`` is the recorded seed, so a session (or ``run_episode``) that resets with it starts
    from the recorded first state and, the scenes being deterministic, re-simulates the episode exactly.
    """

    name = "replay"

    def __init__(self, action_spec: ActionSpec, store: EpisodeStore, episode: int, control_rate: float):
        super().__init__(action_spec)
        recorded = store.info["action_spec"]["names"]
        if list(recorded) != list(action_spec.names):
            raise TeleworldError(f"episode actions {recorded} do not match this scene's {list(action_spec.names)}")
        if store.info["control_rate"] != control_rate:
            raise TeleworldError(f"episode was recorded at {store.info['control_rate']:g} Hz; "
                                 f"replay it at that rate (--rate), not {control_rate:g} Hz")
        self.actions = store.episode(episode, keys=["action"])["action"]
        self.episode_seed = store.episode_info(episode).get("seed")
        self._t = 0

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        self._t = 0

    @property
    def done(self) -> bool:
        return self._t >= len(self.actions)

    @property
    def status(self) -> str:
        return f"replay step {min(self._t, len(self.actions))}/{len(self.actions)}"

    def get_action(self, observation: Observation) -> np.ndarray:
        if self.done:
            return np.zeros(self.action_spec.size, np.float32)
        self._t += 1
        return self.actions[self._t - 1]
