"""Adapter: a dm_control suite task behind the Scene interface, sharing its MjModel/MjData."""

from __future__ import annotations

import importlib

import mujoco
import numpy as np
from dm_control import suite

from teleop.scenes.base import ActionSpec, Scene
from teleop.scenes.task import Task


class SuiteTask(Task):
    """The dm_control task of a SuiteScene: it draws the initial state (seeded from reset's seed, so episodes are
    reproducible) and gives the reward."""

    def initialize(self, physics: SuiteScene, rng: np.random.Generator) -> None:
        physics.env.task.random.seed(int(rng.integers(2**31)))
        physics.env.task.initialize_episode(physics.env.physics)

    def reward(self, physics: SuiteScene) -> float:
        return float(physics.env.task.get_reward(physics.env.physics))


class SuiteScene(Scene):
    """A dm_control suite task: its physics drives the scene, its task (through SuiteTask) draws initial states
    and rewards. Subclasses set ``domain`` and ``suite_task`` (names from ``dm_control.suite``) plus the usual Scene
    attributes."""

    domain: str = ""
    suite_task: str = ""
    task_class = SuiteTask

    def build(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        self.env = suite.load(self.domain, self.suite_task)
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

    def apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action
