"""Input devices behind one interface."""

from teleop.devices.base import Device
from teleop.devices.scripted import PushExpert, RandomPersistent

__all__ = ["Device", "PushExpert", "RandomPersistent"]
