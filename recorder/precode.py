"""Frames' inner chunks encoded in a background thread while an episode is still being recorded."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


class Precoder:
    """Encodes whole inner chunks of a sharded array ahead of the append that will store them.

    Blosc releases the GIL, so on a second core this overlaps the frames' compression (most of a flush's CPU) with
    the control loop that produces them; the flush then takes the bytes instead of encoding. What was encoded is
    used only for the very rows it was given (compared at the flush), so a discarded or rewritten episode is safe.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[str, dict[int, tuple[np.ndarray, Future]]] = {}

    def submit(self, name: str, first: int, rows: np.ndarray, encode: Callable[[np.ndarray], bytes]) -> None:
        """Start encoding ``rows`` (one whole inner chunk starting at row ``first`` of array ``name``)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teleworld-precode")
        self._ahead.setdefault(name, {})[first] = (rows, self._pool.submit(encode, rows))

    def take(self, name: str, first: int, rows: np.ndarray) -> bytes | None:
        """The encoded bytes of these rows at ``first``, if they were submitted; None otherwise."""
        ahead = self._ahead.get(name, {}).pop(first, None)
        if ahead is None or ahead[0].shape != rows.shape or not np.array_equal(ahead[0], rows):
            return None
        return ahead[1].result()

    def forget(self, name: str | None = None, before: int | None = None) -> None:
        """Drop what was submitted for ``name`` (every array when None), or only its chunks starting before a row."""
        for key in [name] if name is not None else list(self._ahead):
            pending = self._ahead.get(key, {})
            for first in [f for f in pending if before is None or f < before]:
                pending.pop(first)[1].cancel()

    def close(self) -> None:
        self.forget()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
