"""The Zarr episode format: one class (EpisodeStore) owns the layout; EpisodeWriter streams into it."""

from recorder.schema import SCHEMA_VERSION
from recorder.store import EpisodeStore
from recorder.writer import EpisodeWriter

__all__ = ["SCHEMA_VERSION", "EpisodeStore", "EpisodeWriter"]
