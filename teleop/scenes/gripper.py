"""gripper: a planar arm with a two-finger gripper grasps a ball and brings it to a target (dm_control manipulator)."""

from __future__ import annotations

from dm_control.suite import manipulator

from teleop.scenes.suite import SuiteScene


class GripperScene(SuiteScene):
    """Action: root, shoulder, elbow and wrist torques and grasp (-1 open, +1 close), all in [-1, 1].

    Reward: dm_control's bring_ball reward (ball near the target). The target is moved in the model at reset,
    so restoring a recorded state also needs the episode's seed to bring the target back.
    """

    name = "gripper"
    domain, suite_task = "manipulator", "bring_ball"
    control_rate = 20.0
    default_cameras = ("fixed",)
    contact_groups = (("fingertip", "ball"), ("thumbtip", "ball"), ("ball", "world"))
    tracked_bodies = ("ball", "hand")
    key_bindings = (
        ("root", "d", "a"),
        ("shoulder", "s", "w"),
        ("elbow", "down", "up"),
        ("wrist", "right", "left"),
        ("grasp", "q", "e"),
    )
    pad_bindings = (
        ("root", "-leftx"),
        ("shoulder", "-lefty"),
        ("elbow", "-righty"),
        ("wrist", "-rightx"),
        ("grasp", "triggerright-triggerleft"),
    )

    def mjcf(self) -> str:
        xml, _assets = manipulator.make_model(use_peg=False, insert=False)
        return xml.decode()
