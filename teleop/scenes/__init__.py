"""Scene registry: every scene is one module (plus its MJCF) registered here by name."""

from __future__ import annotations

from typing import Callable

from teleworld.errors import TeleworldError
from teleop.scenes.base import ActionSpec, Contacts, Observation, Scene
from teleop.scenes.push import PushScene

SCENES: dict[str, Callable[..., Scene]] = {
    "push": PushScene,
}
TAGS: dict[str, tuple[str, ...]] = {
    "push": ("default", "contact", "tabletop"),
}


def load(name: str, **kwargs) -> Scene:
    """Build a registered scene by name; unknown names raise a TeleworldError listing the known ones."""
    if name not in SCENES:
        raise TeleworldError(f"unknown scene {name!r}; known scenes: {', '.join(sorted(SCENES))}")
    return SCENES[name](**kwargs)


__all__ = ["SCENES", "TAGS", "load", "Scene", "Observation", "Contacts", "ActionSpec"]
