"""Scene registry: every scene is one module (plus its MJCF) registered here by name."""

from __future__ import annotations

from typing import Callable

from teleworld.errors import TeleworldError
from teleop.scenes.arm import ArmJointScene, ArmScene
from teleop.scenes.base import ActionSpec, Contacts, Observation, Scene
from teleop.scenes.cartpole import CartpoleSwingupScene
from teleop.scenes.gripper import GripperScene
from teleop.scenes.push import PushScene
from teleop.scenes.reacher import ReacherHardScene

SCENES: dict[str, Callable[..., Scene]] = {
    "push": PushScene,
    "gripper": GripperScene,
    "cartpole-swingup": CartpoleSwingupScene,
    "reacher-hard": ReacherHardScene,
    "arm": ArmScene,
    "arm-joint": ArmJointScene,
}
TAGS: dict[str, tuple[str, ...]] = {
    "push": ("default", "contact", "tabletop"),
    "gripper": ("contact", "grasp", "dm_control"),
    "cartpole-swingup": ("dm_control", "balance"),
    "reacher-hard": ("dm_control", "reach"),
    "arm": ("contact", "grasp", "tabletop", "ik", "dm_control"),
    "arm-joint": ("contact", "grasp", "tabletop", "dm_control"),
}


def load(name: str, **kwargs) -> Scene:
    """Build a registered scene by name; unknown names raise a TeleworldError listing the known ones."""
    if name not in SCENES:
        raise TeleworldError(f"unknown scene {name!r}; known scenes: {', '.join(sorted(SCENES))}")
    return SCENES[name](**kwargs)


__all__ = ["SCENES", "TAGS", "load", "Scene", "Observation", "Contacts", "ActionSpec"]
