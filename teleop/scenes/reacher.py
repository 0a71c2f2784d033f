"""reacher-hard: a two-link planar arm reaches a small random target (dm_control suite)."""

from __future__ import annotations

import numpy as np

from teleop.scenes.suite import SuiteScene, SuiteTask

REACH = 0.2  # targets are drawn (and may be moved) within this square, m


class ReachTask(SuiteTask):
    """dm_control's reacher task, with its success and its target as the goal."""

    def success(self, physics: ReacherHardScene) -> bool:
        """The fingertip touches the target (the suite's reward is 1 exactly then)."""
        return self.reward(physics) >= 1.0

    def goal(self, physics: ReacherHardScene) -> np.ndarray:
        """The target's position (x, y), m, drawn at reset (the camera shows it too)."""
        return physics.env.physics.named.model.geom_pos["target", :2].copy()

    def goal_distance(self, physics: ReacherHardScene) -> float:
        """Fingertip to target, m."""
        return float(physics.env.physics.finger_to_target_dist())

    def set_goal(self, physics: ReacherHardScene, goal: np.ndarray) -> np.ndarray:
        """Move the target (a model geom) within the arm's reach."""
        physics.env.physics.named.model.geom_pos["target", :2] = np.clip(goal, -REACH, REACH)
        return self.goal(physics)


class ReacherHardScene(SuiteScene):
    """Action: shoulder and wrist torques in [-1, 1]. Reward: 1 while the fingertip touches the target, else 0."""

    name = "reacher-hard"
    domain, suite_task = "reacher", "hard"
    task_class = ReachTask
    control_rate = 25.0  # two 20 ms physics steps per control step
    default_cameras = ("fixed",)
    tracked_bodies = ("finger", "hand")  # fingertip and elbow; the target is a model geom, not in the state
    key_bindings = (("shoulder", "right", "left"), ("wrist", "down", "up"))
    pad_bindings = (("shoulder", "-leftx"), ("wrist", "-righty"))
