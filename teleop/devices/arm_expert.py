"""A scripted pick-and-place expert for the ``arm`` scene, driving the same end-effector commands as a person."""

from __future__ import annotations

import numpy as np

from teleop.devices.base import Device
from teleop.scenes.arm import MAX_LINEAR, MAX_YAW, ArmScene
from teleop.scenes.base import Observation

HOVER = 0.10  # height above the object's centre to line up at, m
CARRY = 0.15  # pinch-site height while carrying, m
GRASP_DEPTH = 0.004  # the pinch site goes this far below the object's centre, m
REACHED = 0.012  # a waypoint counts as reached within this, m
CLOSE_STEPS = 14  # control steps the gripper closes for (0.7 s at 20 Hz)
OPEN_STEPS = 12
MAX_RETRIES = 3


class ArmExpert(Device):
    """Above the object (turned to its faces), descend, close, lift, carry above the zone, lower, release, back up.

    A grasp that did not lift the object is retried from above (up to MAX_RETRIES). Waypoints are tracked with a
    proportional velocity command; Gaussian noise with persistence (Ornstein-Uhlenbeck) is added to the linear
    command while moving freely (fading out within 5 cm of the waypoint), ``noise`` sets its scale, and each episode
    draws a small offset of the place point.
    """

    name = "scripted-arm-expert"

    def __init__(self, scene: ArmScene, noise: float = 0.15, gain: float = 6.0):
        if scene.control != "ee":
            raise ValueError("the arm expert drives end-effector control (scene control='ee')")
        super().__init__(scene.action_spec)
        self.scene, self.noise, self.gain = scene, noise, gain

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        self.rng = rng
        self._ou = np.zeros(3)
        self.phase, self.retries, self._count = "above", 0, 0
        self._place_offset = rng.uniform(-0.015, 0.015, size=2)
        self._yaw = self._grasp_yaw()

    def get_action(self, observation: Observation) -> np.ndarray:
        s = self.scene
        tcp, obj, half = s.tcp_position(), s.object_position(), s.object_half()
        grip = -1.0
        if self.phase == "above":
            goal = np.array([obj[0], obj[1], obj[2] + HOVER])
            self._yaw = self._grasp_yaw()
            if self._near(tcp, goal) and abs(_wrap(s.tcp_yaw() - self._yaw)) < 0.1:
                self.phase = "descend"
        elif self.phase == "descend":
            goal = np.array([obj[0], obj[1], max(obj[2] - GRASP_DEPTH, 0.012)])
            if self._near(tcp, goal, 0.008):
                self.phase, self._count = "close", 0
        elif self.phase == "close":
            goal, grip = tcp, 1.0
            self._count += 1
            if self._count >= CLOSE_STEPS:
                self.phase = "lift"
        elif self.phase == "lift":
            goal, grip = np.array([tcp[0], tcp[1], CARRY]), 1.0
            if tcp[2] > CARRY - 0.03:
                if s.lifted():
                    self.phase = "carry"
                elif self.retries < MAX_RETRIES:
                    self.retries += 1
                    self.phase = "retry"
                else:
                    self.phase = "done"
        elif self.phase == "retry":  # let go and line up again
            goal, grip = tcp, -1.0
            if s.grip() <= 0.0:
                self.phase = "above"
        elif self.phase == "carry":
            zone = s.goal() + self._place_offset
            goal, grip = np.array([zone[0], zone[1], CARRY]), 1.0
            if not s.lifted():  # dropped on the way: pick it up again
                self.phase = "retry"
            elif self._near(tcp, goal, 0.02):
                self.phase = "lower"
        elif self.phase == "lower":
            zone = s.goal() + self._place_offset
            goal, grip = np.array([zone[0], zone[1], half + 0.008 - GRASP_DEPTH]), 1.0
            if tcp[2] < half + 0.02:
                self.phase, self._count = "release", 0
        elif self.phase == "release":
            goal, grip = tcp, -1.0
            self._count += 1
            if self._count >= OPEN_STEPS:
                self.phase = "up"
        else:  # "up" and "done": clear of the object, hands open
            goal = np.array([tcp[0], tcp[1], CARRY])
        linear = np.clip(self.gain * (goal - tcp) / MAX_LINEAR, -1.0, 1.0)
        # yaw is steered on the controller's target yaw (the hand lags it; steering on the measured yaw oscillates)
        yaw = np.clip(4.0 * _wrap(self._yaw - s.target_yaw()) / MAX_YAW, -1.0, 1.0)
        self._ou = 0.8 * self._ou + self.rng.normal(0.0, self.noise, size=3)
        # noise while moving freely, fading out near the waypoint; none where millimetres matter
        moving = self.phase in ("above", "carry", "up")
        fade = min(1.0, float(np.linalg.norm(goal - tcp)) / 0.05) if moving else 0.0
        return self.action_spec.clip(np.array([*(linear + fade * self._ou), yaw, grip]))

    def _near(self, tcp: np.ndarray, goal: np.ndarray, tol: float = REACHED) -> bool:
        return bool(np.linalg.norm(tcp - goal) < tol)

    def _grasp_yaw(self) -> float:
        """The hand's yaw that lines its fingers up with the cube's faces, nearest to the current yaw."""
        current, face = self.scene.tcp_yaw(), self.scene.object_yaw()
        k = np.round((current - face) / (np.pi / 2))
        return _wrap(face + k * np.pi / 2)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)
