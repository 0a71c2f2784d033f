"""The Zarr episode format: one class (EpisodeStore) owns the layout; EpisodeWriter streams into it.

Around them: health (validate, repair), edit (delete, trim, split, merge), export (LeRobot v3.0, diffusion_policy),
video, checksim (re-simulation), loader (training windows) and windows (their index maths). See docs/data.md.
"""

from recorder.schema import SCHEMA_VERSION
from recorder.store import EpisodeStore
from recorder.writer import EpisodeWriter

__all__ = ["SCHEMA_VERSION", "EpisodeStore", "EpisodeWriter"]
