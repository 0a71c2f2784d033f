"""cartpole-swingup: push a cart along a rail to swing a hanging pole up and balance it (dm_control suite)."""

from __future__ import annotations

from teleop.scenes.suite import SuiteScene


class CartpoleSwingupScene(SuiteScene):
    """Action: force on the cart in [-1, 1]. Reward: dm_control's smooth upright-and-centred reward in [0, 1]."""

    name = "cartpole-swingup"
    domain, suite_task = "cartpole", "swingup"
    control_rate = 20.0
    default_cameras = ("fixed",)
    tracked_bodies = ("cart", "pole_1")  # the pole's centre of mass: half way to its tip
    key_bindings = (("slide", "left", "right"),)
    pad_bindings = (("slide", "leftx"),)
