"""Scripted operators: data without a human, through the same Device interface."""

from __future__ import annotations

import numpy as np

from teleop.devices.arm_expert import ArmExpert
from teleop.devices.base import Device
from teleop.scenes.arm import ArmScene
from teleop.scenes.base import Observation
from teleop.scenes.push import MAX_SPEED, PushScene

PUSHER_RADIUS = 0.035
GOAL_HOLD = 0.02  # a goal-seeking expert stops pushing once the box is this close to the goal, m


class PushExpert(Device):
    """A noisy expert for ``push``: walks behind the box, then pushes it toward a random target.

    Targets change when reached or after a timeout; with ``to_goal`` the one target is the scene's goal
    and the expert stops pushing once the box is there. Gaussian noise with persistence (an
    Ornstein-Uhlenbeck process) keeps the data diverse; ``noise`` sets its scale.
    """

    name = "scripted-push-expert"

    def __init__(self, scene: PushScene, noise: float = 0.3, gain: float = 12.0, retarget_steps: int = 60,
                 to_goal: bool = False):
        super().__init__(scene.action_spec)
        self.scene, self.noise, self.gain, self.retarget_steps = scene, noise, gain, retarget_steps
        self.to_goal = to_goal

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        self.rng = rng
        self._ou = np.zeros(2)
        self._new_target()

    def _new_target(self) -> None:
        self.target = self.scene.goal() if self.to_goal else self.rng.uniform(-0.17, 0.17, size=2)
        self._steps_on_target = 0

    def get_action(self, observation: Observation) -> np.ndarray:
        pusher, box = self.scene.pusher_xy(), self.scene.box_xy()
        self._steps_on_target += 1
        to_target = self.target - box
        if self.to_goal:
            if np.linalg.norm(to_target) < GOAL_HOLD:
                return self._noisy(np.zeros(2))
        elif np.linalg.norm(to_target) < 0.03 or self._steps_on_target > self.retarget_steps:
            self._new_target()
            to_target = self.target - box
        direction = to_target / (np.linalg.norm(to_target) + 1e-9)
        behind = box - direction * (self.scene.box_half_width() * 1.4 + PUSHER_RADIUS + 0.01)
        offset = pusher - box
        aligned = np.dot(offset, -direction) > 0.8 * np.linalg.norm(offset)
        if aligned and np.linalg.norm(pusher - behind) < 0.05:
            goal = box + direction * 0.05  # push through the box's centre
        elif np.dot(offset, direction) > -0.02 and np.linalg.norm(offset) < 0.12:
            # on the wrong side: walk around the box, keeping clear of it
            side = np.array([-direction[1], direction[0]])
            side *= np.sign(np.dot(offset, side)) or 1.0
            goal = box + side * 0.1 - direction * 0.04
        else:
            goal = behind
        return self._noisy(np.clip(self.gain * (goal - pusher), -MAX_SPEED, MAX_SPEED) / MAX_SPEED)

    def _noisy(self, velocity: np.ndarray) -> np.ndarray:
        self._ou = 0.8 * self._ou + self.rng.normal(0.0, self.noise, size=2)
        return self.action_spec.clip(velocity + self._ou)


class RandomPersistent(Device):
    """Random actions held for a random number of steps (exploration, any scene)."""

    name = "scripted-random"

    def __init__(self, action_spec, mean_hold: int = 8):
        super().__init__(action_spec)
        self.mean_hold = mean_hold

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        self.rng, self._hold, self._action = rng, 0, np.zeros(self.action_spec.size, np.float32)

    def get_action(self, observation: Observation) -> np.ndarray:
        if self._hold <= 0:
            self._action = self.rng.uniform(self.action_spec.low, self.action_spec.high).astype(np.float32)
            self._hold = int(self.rng.geometric(1.0 / self.mean_hold))
        self._hold -= 1
        return self._action


def goal_expert(scene) -> Device | None:
    """The scene's goal-aware scripted expert, heading for the episode's goal (push: the box to the goal point;
    arm with end-effector control: the object to the zone); None for a scene without one."""
    if isinstance(scene, PushScene):
        return PushExpert(scene, to_goal=True)
    if isinstance(scene, ArmScene) and scene.control == "ee":
        return ArmExpert(scene)
    return None


def scripted_operator(scene) -> Device:
    """The default scripted operator of a scene: its expert when it has one, else persistent random actions."""
    if isinstance(scene, PushScene):
        return PushExpert(scene)
    if isinstance(scene, ArmScene) and scene.control == "ee":
        return ArmExpert(scene)
    return RandomPersistent(scene.action_spec)


class MixedOperator(Device):
    """Per episode, the expert with probability ``expert_ratio``, else the explorer; ``label`` names the pick.

    The pick is drawn from a child of the episode's random stream, so each operator sees exactly the stream
    it would see alone: a ratio of 1 (or 0) records the same episodes as the expert (or explorer) itself.
    ``perturb`` > 0 interrupts the expert (noise injection, as DART does): at each of its steps, with this
    probability, the explorer takes over for one of its held actions (``mean_hold`` steps on average), from
    another child stream, and the expert then recovers from wherever that left the scene. The data then show
    what the expert's own episodes never do: grasps let go, pushes broken off, objects left behind.
    """

    name = "scripted-mixed"

    def __init__(self, expert: Device | None, explorer: Device, expert_ratio: float, perturb: float = 0.0,
                 mean_hold: int = 8):
        if not 0.0 <= expert_ratio <= 1.0:
            raise ValueError(f"expert_ratio must be in [0, 1], got {expert_ratio}")
        if not 0.0 <= perturb <= 1.0:
            raise ValueError(f"perturb must be in [0, 1], got {perturb}")
        super().__init__(explorer.action_spec)
        self.expert, self.explorer, self.expert_ratio = expert, explorer, expert_ratio
        self.perturb, self.mean_hold = perturb, mean_hold
        self.current: Device = explorer
        self._interrupt_left = 0

    @property
    def label(self) -> str:
        """'expert', 'perturbed' (the expert, interrupted) or 'random': which operator drives the episode."""
        if self.current is not self.expert:
            return "random"
        return "perturbed" if self.perturb else "expert"

    def connect(self) -> None:
        for device in (self.expert, self.explorer):
            if device is not None:
                device.connect()
        super().connect()

    def disconnect(self) -> None:
        for device in (self.expert, self.explorer):
            if device is not None:
                device.disconnect()
        super().disconnect()

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        pick_expert = self.expert is not None and rng.spawn(1)[0].random() < self.expert_ratio
        self.current = self.expert if pick_expert else self.explorer
        self.current.on_reset(observation, rng)
        self._interrupt_left = 0
        if pick_expert and self.perturb:
            self._interrupts = rng.spawn(1)[0]
            self.explorer.on_reset(observation, self._interrupts)

    def get_action(self, observation: Observation) -> np.ndarray:
        if self.current is self.expert and self.perturb and self._interrupted():
            return self.explorer.get_action(observation)
        return self.current.get_action(observation)

    def _interrupted(self) -> bool:
        """Whether the explorer acts at this step of the expert's episode."""
        if self._interrupt_left == 0 and self._interrupts.random() < self.perturb:
            self._interrupt_left = int(self._interrupts.geometric(1.0 / self.mean_hold))
        if self._interrupt_left:
            self._interrupt_left -= 1
            return True
        return False


def mixed_operator(scene, expert_ratio: float, perturb: float = 0.0) -> MixedOperator:
    """A scene's goal-seeking expert, interrupted with probability ``perturb`` a step, mixed with persistent random
    exploration (all random without an expert)."""
    expert = PushExpert(scene, to_goal=True) if isinstance(scene, PushScene) else None
    if isinstance(scene, ArmScene) and scene.control == "ee":
        expert = ArmExpert(scene)
    return MixedOperator(expert, RandomPersistent(scene.action_spec), expert_ratio, perturb)
