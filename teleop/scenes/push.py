"""push: a round pusher moved in x/y pushes a free box across a walled table, seen from above."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from teleop.scenes.base import ActionSpec, Scene

XML = Path(__file__).with_suffix(".xml")
MAX_SPEED = 0.3  # m/s at |action| = 1
ARENA = 0.22  # half-width of the area where the pusher and box start, m


class PushScene(Scene):
    """Action: pusher velocity (vx, vy) in [-1, 1], scaled to ±0.3 m/s. Reward: -distance of box to goal."""

    name = "push"
    control_rate = 20.0
    default_cameras = ("overhead",)
    contact_groups = (("pusher", "box"), ("box", "world"))
    key_bindings = (("pusher_vx", "left", "right"), ("pusher_vy", "down", "up"))
    pad_bindings = (("pusher_vx", "leftx"), ("pusher_vy", "-lefty"))

    def build(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = mujoco.MjModel.from_xml_path(str(XML))
        return model, mujoco.MjData(model)

    def mjcf(self) -> str:
        return XML.read_text()

    @property
    def action_spec(self) -> ActionSpec:
        return ActionSpec(names=("pusher_vx", "pusher_vy"), low=(-1.0, -1.0), high=(1.0, 1.0))

    def initialize(self, rng: np.random.Generator) -> None:
        box_xy = rng.uniform(-ARENA + 0.05, ARENA - 0.05, size=2)
        while True:  # start the pusher clear of the box
            pusher_xy = rng.uniform(-ARENA, ARENA, size=2)
            if np.linalg.norm(pusher_xy - box_xy) > 0.14:
                break
        yaw = rng.uniform(-np.pi, np.pi)
        self.data.qpos[0:2] = pusher_xy
        self.data.qpos[2:5] = [box_xy[0], box_xy[1], 0.031]
        self.data.qpos[5:9] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.goal = rng.uniform(-ARENA + 0.05, ARENA - 0.05, size=2)

    def apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action * MAX_SPEED

    def reward(self) -> float:
        return -float(np.linalg.norm(self.box_xy() - self.goal))

    def pusher_xy(self) -> np.ndarray:
        return self.data.qpos[0:2].copy()

    def box_xy(self) -> np.ndarray:
        return self.data.qpos[2:4].copy()
