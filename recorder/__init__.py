"""The Zarr episode format: one class (EpisodeStore) owns the layout; EpisodeWriter streams into it.

Around them: background_writer (the writer on its own thread, for real-time loops), health (validate, repair), edit
(delete, trim, split, merge), export (LeRobot v3.0, diffusion_policy), video, loader (training windows) and windows
(their index maths). The recorder imports nothing of teleop, train or replay (tests/test_layers.py). See docs/data.md.
"""

from recorder.schema import SCHEMA_VERSION
from recorder.store import EpisodeStore
from recorder.writer import EpisodeWriter

__all__ = ["SCHEMA_VERSION", "EpisodeStore", "EpisodeWriter"]
