"""EpisodeWriter: buffers steps in memory and writes whole chunks; commits an episode at its end."""

from __future__ import annotations

import math
import time

import numpy as np

from recorder.schema import CONTACT_SPECS, step_specs
from recorder.store import EpisodeStore
from teleworld.errors import TeleworldError


class EpisodeWriter:
    """Streams one episode at a time into an EpisodeStore.

    ``add(step, contacts)`` buffers; full blocks are written as they fill; ``end()`` writes the rest and commits
    meta/episode_ends last, so a crash never leaves a half episode that looks committed.
    """

    def __init__(self, store: EpisodeStore):
        store._require_writable()
        self.store = store
        self.specs = step_specs(store.info)
        if store.uncommitted_steps():
            store.truncate_uncommitted()
        self.flush_every = min(store.block(f"data/{k}") for k in self.specs)
        self._shapes = {k: spec.shape for k, spec in self.specs.items()}
        self._contact_dtypes = {k: np.dtype(spec.dtype) for k, spec in CONTACT_SPECS.items()}
        # frames whose inner chunks the store encodes in the background as they fill: key -> rows per chunk
        self._precode = {k: n for k in self.specs if (n := store.precode_rows(f"data/{k}"))}
        self._precode_next: dict[str, tuple[int, int]] = {}  # key -> (its next chunk's buffer index, store row)
        self._steps: dict[str, list] = {}  # per key, the buffered steps' values as given (converted at flush)
        self._buffered = 0
        self._contacts: dict[str, list[np.ndarray]] = {}
        self._length = 0
        self._meta: dict | None = None
        self._wall: list[float] = []

    @property
    def recording(self) -> bool:
        return self._meta is not None

    @property
    def length(self) -> int:
        """Steps in the open episode."""
        return self._length

    def begin(self, **meta) -> None:
        """Open an episode; ``meta`` (seed, device, operator...) is stored with it."""
        if self.recording:
            raise TeleworldError("an episode is already open; end or discard it first")
        self._meta = {"start_time": time.time(), **meta}
        self._reset_buffers()
        self._wall = []
        self.store.open_episode(self._meta)

    def add(self, step: dict[str, np.ndarray], contacts: dict[str, np.ndarray]) -> None:
        """Buffer one step (keys of data/) and its contact rows (keys of contacts/)."""
        if not self.recording:
            raise TeleworldError("no open episode; call begin() first")
        # add() runs once per control step: plain Python on a few numbers beats numpy's per-call overhead here
        action = np.asarray(step["action"]).ravel().tolist()
        if not all(map(math.isfinite, action)):
            raise TeleworldError(f"refusing a non-finite action at step {self._length}: {action}")
        values = []
        for key, shape in self._shapes.items():
            value = step[key]
            kind = type(value)
            if kind is float or kind is int:
                got = ()
            else:  # arrays and numpy scalars have a shape; lists and the like are measured
                got = getattr(value, "shape", None)
                got = np.shape(value) if got is None else got
            if got != shape:
                raise TeleworldError(f"data/{key} expects shape {shape}, got {got}")
            values.append(value)
        wall = float(step["wall_time"])
        rows = {}
        for key, dtype in self._contact_dtypes.items():
            value = contacts[key]
            rows[key] = value if type(value) is np.ndarray and value.dtype == dtype else np.asarray(value, dtype)
        for buffer, value in zip(self._steps.values(), values):  # only once the whole step checked out
            buffer.append(value)
        for key, value in rows.items():
            self._contacts[key].append(value)
        self._wall.append(wall)
        self._buffered += 1
        self._length += 1
        if self._buffered >= self.flush_every:
            self.flush()
        else:
            for key, (index, row) in self._precode_next.items():
                if self._buffered - index >= self._precode[key]:
                    self._precode_chunk(key, index, row)

    def _precode_chunk(self, key: str, index: int, row: int) -> None:
        """Hand a whole inner chunk of buffered frames to the store's background encoder."""
        size = self._precode[key]
        rows = np.array(self._steps[key][index : index + size], dtype=self.specs[key].dtype)
        self.store.precode(f"data/{key}", row, rows)
        self._precode_next[key] = (index + size, row + size)

    def flush(self) -> None:
        """Write buffered steps to the store (whole arrays at once, never one step per write) and mark them."""
        if self._buffered:
            self._write_buffered()
            self.store.mark_written()

    def _write_buffered(self) -> None:
        """Write buffered steps without marking them (end() marks them with the commit)."""
        values = {f"data/{key}": np.array(rows, dtype=self.specs[key].dtype) for key, rows in self._steps.items()}
        values.update({f"contacts/{key}": np.concatenate(rows).reshape(-1, *CONTACT_SPECS[key].shape)
                       for key, rows in self._contacts.items()})
        self.store.append_many(values)  # every array (and a staged episode info) in one concurrent write
        self._reset_buffers()

    def end(self, **meta) -> int:
        """Write the rest of the episode and commit it; returns its index."""
        if not self.recording:
            raise TeleworldError("no open episode to end")
        if self._length == 0:
            raise TeleworldError("cannot save an empty episode")
        info = {**self._meta, "timing": timing_health(np.asarray(self._wall), self.store.info["control_rate"]),
                **meta, "length": self._length}
        self.store.open_episode(info)  # the final info goes with the last flush; the commit then writes the end
        if self._buffered:
            self._write_buffered()
        index = self.store.commit_episode(info)  # the mark, the info and the end
        self._meta, self._length = None, 0
        return index

    def discard(self) -> None:
        """Drop the open episode: buffered steps and anything already flushed."""
        self._reset_buffers()
        self._meta, self._length = None, 0
        self.store.truncate_uncommitted()

    def _reset_buffers(self) -> None:
        self._buffered = 0
        self._steps = {k: [] for k in self.specs}
        self._contacts = {k: [] for k in CONTACT_SPECS}
        for key, size in self._precode.items():  # the first chunk boundary at or after the store's next row
            row = self.store.next_row(f"data/{key}")
            self._precode_next[key] = ((-row) % size, row + (-row) % size)


def timing_health(wall_time: np.ndarray, control_rate: float) -> dict:
    """Loop timing of one episode from its observation times: step intervals, jitter, steps later than 1.5 periods."""
    dt = np.diff(wall_time) * 1e3
    if len(dt) == 0:
        return {"dt_mean_ms": None, "dt_p50_ms": None, "dt_p99_ms": None, "dt_max_ms": None, "jitter_p99_ms": None,
                "late_steps": 0}
    period_ms = 1e3 / control_rate
    p50, p99 = np.percentile(dt, [50, 99])  # one call: each percentile costs a partition of the whole episode
    return {
        "dt_mean_ms": round(float(dt.mean()), 3),
        "dt_p50_ms": round(float(p50), 3),
        "dt_p99_ms": round(float(p99), 3),
        "dt_max_ms": round(float(dt.max()), 3),
        "jitter_p99_ms": round(float(np.percentile(np.abs(dt - p50), 99)), 3),
        "late_steps": int((dt > 1.5 * period_ms).sum()),
    }
