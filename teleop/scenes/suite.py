"""Adapter: a dm_control suite task behind the Scene interface, sharing its MjModel/MjData."""

from __future__ import annotations

import importlib

import mujoco
import numpy as np
from dm_control import suite

from teleop.scenes.base import ActionSpec, Scene


class SuiteScene(Scene):
    """A dm_control suite task: its physics drives the scene, its task draws initial states and rewards.

    Subclasses set ``domain`` and ``task`` (names from ``dm_control.suite``) plus the usual Scene attributes.
    The task's initial-state randomisation is seeded from ``reset(seed)``, so episodes are reproducible.
    """

    domain: str = ""
    task: str = ""

    def build(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        self.env = suite.load(self.domain, self.task)
        physics = self.env.physics
        return physics.model.ptr, physics.data.ptr

    def mjcf(self) -> str:
        xml, _assets = importlib.import_module(f"dm_control.suite.{self.domain}").get_model_and_assets()
        return xml.decode()

    @property
    def action_spec(self) -> ActionSpec:
        names = tuple(self.model.actuator(i).name for i in range(self.model.nu))
        low, high = self.model.actuator_ctrlrange.T
        return ActionSpec(names=names, low=tuple(map(float, low)), high=tuple(map(float, high)))

    def initialize(self, rng: np.random.Generator) -> None:
        self.env.task.random.seed(int(rng.integers(2**31)))
        self.env.task.initialize_episode(self.env.physics)

    def apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action

    def reward(self) -> float:
        return float(self.env.task.get_reward(self.env.physics))
