"""Index maths for training windows; the pure functions live in recorder/windows.py, shared with the loader."""

from recorder.windows import episode_starts, make_windows, split_episodes

__all__ = ["episode_starts", "make_windows", "split_episodes"]
