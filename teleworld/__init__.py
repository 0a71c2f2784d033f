"""teleworld: teleoperate MuJoCo robots, record Zarr episodes, train world models, replay them."""

import os

__version__ = "0.1.0"

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's import banner is not ours to print
