"""Scenes, robots, input devices and the real-time control loop."""

import os

# Headless by default: MuJoCo reads MUJOCO_GL when it is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")
