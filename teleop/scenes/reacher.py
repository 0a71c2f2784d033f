"""reacher-hard: a two-link planar arm reaches a small random target (dm_control suite)."""

from __future__ import annotations

import numpy as np

from teleop.scenes.suite import SuiteScene


class ReacherHardScene(SuiteScene):
    """Action: shoulder and wrist torques in [-1, 1]. Reward: 1 while the fingertip touches the target, else 0."""

    name = "reacher-hard"
    domain, task = "reacher", "hard"
    control_rate = 25.0  # two 20 ms physics steps per control step
    default_cameras = ("fixed",)
    tracked_bodies = ("finger", "hand")  # fingertip and elbow; the target is a model geom, not in the state
    key_bindings = (("shoulder", "right", "left"), ("wrist", "down", "up"))
    pad_bindings = (("shoulder", "-leftx"), ("wrist", "-righty"))

    def success(self) -> bool:
        """The fingertip touches the target (the suite's reward is 1 exactly then)."""
        return self.reward() >= 1.0

    def goal(self) -> np.ndarray:
        """The target's position (x, y), m, drawn at reset (the camera shows it too)."""
        return self.env.physics.named.model.geom_pos["target", :2].copy()
