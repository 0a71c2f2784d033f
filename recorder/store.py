"""EpisodeStore: the only code that knows the Zarr layout of a teleworld dataset (see recorder/schema.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs

from recorder.schema import (
    CONTACT_SPECS,
    REQUIRED_INFO,
    ROOT_KEY,
    SCHEMA_VERSION,
    ArraySpec,
    parse_version,
    step_specs,
)
from teleworld.errors import TeleworldError

CHUNK_BYTES = 2 * 1024 * 1024  # target uncompressed bytes per chunk, along time
MAX_CHUNK_STEPS = 16384
LOCK_NAME = ".teleworld.lock"


def _compressor(dtype: str) -> zarr.codecs.BloscCodec:
    shuffle = "noshuffle" if np.dtype(dtype).itemsize == 1 else "shuffle"
    return zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


def chunk_steps(spec: ArraySpec, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Steps per chunk so that one chunk holds about chunk_bytes of raw data."""
    step_bytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    return int(np.clip(chunk_bytes // max(step_bytes, 1), 1, MAX_CHUNK_STEPS))


class EpisodeStore:
    """A directory of time-major arrays with committed episode boundaries in meta/episode_ends.

    Make one with :meth:`create` or :meth:`open`; never construct directly.
    """

    def __init__(self, root: zarr.Group, path: str, writable: bool):
        self.root, self.path, self.writable = root, path, writable
        self.info: dict = dict(root.attrs[ROOT_KEY])
        self._lock: Path | None = None

    # ----- named constructors -----
    @classmethod
    def create(cls, path: str | os.PathLike, info: dict, chunk_bytes: int = CHUNK_BYTES) -> "EpisodeStore":
        """Create an empty store for a scene described by ``info`` (see Scene.info()); refuses to overwrite."""
        path = str(path)
        if Path(path).exists():
            raise TeleworldError(f"{path} already exists; choose a new path or open it to append")
        missing = [k for k in REQUIRED_INFO if k not in info]
        if missing:
            raise TeleworldError(f"dataset info lacks {', '.join(missing)}")
        root = zarr.open_group(path, mode="w-", zarr_format=3)
        specs = step_specs(info)
        for key, spec in specs.items():
            root.create_array(
                f"data/{key}",
                shape=(0, *spec.shape),
                chunks=(chunk_steps(spec, chunk_bytes), *spec.shape),
                dtype=spec.dtype,
                compressors=_compressor(spec.dtype),
            )
        for key, spec in CONTACT_SPECS.items():
            root.create_array(
                f"contacts/{key}",
                shape=(0, *spec.shape),
                chunks=(chunk_steps(spec, chunk_bytes), *spec.shape),
                dtype=spec.dtype,
                compressors=_compressor(spec.dtype),
            )
        root.create_array("meta/episode_info", shape=(0,), chunks=(1024,), dtype=str)
        root.create_array("meta/episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=-1)
        root.attrs[ROOT_KEY] = {**info, "schema_version": SCHEMA_VERSION}
        store = cls(root, path, writable=True)
        store._acquire_lock()
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "EpisodeStore":
        """Open an existing store for reading (``r``) or appending (``a``, takes the writer lock)."""
        path = str(path)
        if "://" not in path and not Path(path).exists():
            raise TeleworldError(f"no dataset at {path}")
        try:
            root = zarr.open_group(path, mode="r" if mode == "r" else "r+")
        except Exception as exc:  # zarr raises several types for foreign or broken stores
            raise TeleworldError(f"{path} is not a readable Zarr store ({type(exc).__name__})") from None
        if ROOT_KEY not in root.attrs:
            raise TeleworldError(f"{path} is a Zarr store but not a teleworld dataset (no '{ROOT_KEY}' attribute)")
        version = root.attrs[ROOT_KEY].get("schema_version", "0.0")
        if parse_version(version)[0] > parse_version(SCHEMA_VERSION)[0]:
            raise TeleworldError(
                f"{path} has schema {version}, newer than this teleworld reads ({SCHEMA_VERSION}); upgrade teleworld"
            )
        for group in ("data", "contacts", "meta"):
            if group not in root:
                raise TeleworldError(f"{path} is damaged: group {group}/ is missing")
        store = cls(root, path, writable=mode != "r")
        if store.writable:
            store._acquire_lock()
        return store

    # ----- committed episodes -----
    @property
    def episode_ends(self) -> np.ndarray:
        """Exclusive cumulative ends of committed episodes (int64)."""
        ends = self.root["meta/episode_ends"][:]
        length = self.data_length()
        n = 0
        prev = 0
        for end in ends:  # committed = the increasing prefix that the data covers
            if end <= prev or end > length:
                break
            prev, n = int(end), n + 1
        return ends[:n]

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def num_steps(self) -> int:
        ends = self.episode_ends
        return int(ends[-1]) if len(ends) else 0

    @property
    def keys(self) -> list[str]:
        """Names of the per-step arrays under data/."""
        return sorted(self.root["data"].array_keys())

    def data_length(self) -> int:
        """Steps present under data/ (the shortest array), committed or not."""
        return min(self.root[f"data/{k}"].shape[0] for k in self.keys)

    def episode_slice(self, index: int) -> slice:
        """Steps of episode ``index`` (negative indices count from the end)."""
        ends = self.episode_ends
        n = len(ends)
        if not -n <= index < n:
            raise TeleworldError(f"episode {index} does not exist; the store has {n} episodes")
        index %= n
        start = int(ends[index - 1]) if index > 0 else 0
        return slice(start, int(ends[index]))

    def episode(self, index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the named) per-step arrays of one episode."""
        sl = self.episode_slice(index)
        return {k: self.root[f"data/{k}"][sl] for k in (keys or self.keys)}

    def episode_contacts(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(per-step offsets of length T+1, contact rows) of one episode."""
        sl = self.episode_slice(index)
        counts = self.root["data/contact_count"][: sl.stop]
        starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        first, last = int(starts[sl.start]), int(starts[sl.stop])
        rows = {k: self.root[f"contacts/{k}"][first:last] for k in CONTACT_SPECS}
        return starts[sl.start : sl.stop + 1] - first, rows

    def episode_info(self, index: int) -> dict:
        """The JSON metadata stored with one episode."""
        sl = self.episode_slice(index)
        info = json.loads(str(self.root["meta/episode_info"][index % self.num_episodes]))
        info.setdefault("length", sl.stop - sl.start)
        return info

    def array(self, key: str) -> zarr.Array:
        """A data/ array by key, for bulk reads."""
        if key not in self.keys:
            raise TeleworldError(f"dataset has no array data/{key}; it has {', '.join(self.keys)}")
        return self.root[f"data/{key}"]

    # ----- writing (EpisodeWriter drives these) -----
    def uncommitted_steps(self) -> int:
        """Steps written past the last committed episode (left by a crash or an open episode)."""
        return max(self.root[f"data/{k}"].shape[0] for k in self.keys) - self.num_steps

    def committed_contact_rows(self) -> int:
        return int(self.root["data/contact_count"][: self.num_steps].sum(dtype=np.int64))

    def truncate_uncommitted(self) -> int:
        """Drop everything past the last committed episode; returns the number of steps dropped."""
        self._require_writable()
        dropped = self.uncommitted_steps()
        steps, rows, n = self.num_steps, self.committed_contact_rows(), self.num_episodes
        for k in self.keys:
            self._resize(f"data/{k}", steps)
        for k in CONTACT_SPECS:
            self._resize(f"contacts/{k}", rows)
        self._resize("meta/episode_info", n)
        self._resize("meta/episode_ends", n)
        return dropped

    def append(self, path: str, values: np.ndarray) -> None:
        """Append rows along time to ``data/<key>`` or ``contacts/<key>`` (one write per call)."""
        arr = self.root[path]
        start = arr.shape[0]
        if len(values) == 0:
            return
        arr.resize((start + len(values), *arr.shape[1:]))
        arr[start:] = values

    def commit_episode(self, info: dict) -> int:
        """Record an episode whose steps are all written: its info first, then its end (the commit)."""
        self._require_writable()
        n = self.num_episodes
        length = self.data_length()
        if length <= self.num_steps:
            raise TeleworldError("cannot commit an empty episode")
        self._resize("meta/episode_info", n + 1)
        self.root["meta/episode_info"][n] = json.dumps(info)
        self._resize("meta/episode_ends", n + 1)
        self.root["meta/episode_ends"][n] = length
        return n

    def _resize(self, path: str, length: int) -> None:
        arr = self.root[path]
        if arr.shape[0] != length:
            arr.resize((length, *arr.shape[1:]))

    def _require_writable(self) -> None:
        if not self.writable:
            raise TeleworldError(f"{self.path} is open read-only")

    # ----- single-writer lock -----
    def _acquire_lock(self) -> None:
        if "://" in self.path:
            return
        lock = Path(self.path) / LOCK_NAME
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = int(lock.read_text().strip() or 0)
            if pid and _alive(pid):
                raise TeleworldError(f"{self.path} is being written by process {pid}; one writer at a time") from None
            lock.unlink(missing_ok=True)  # stale lock of a dead process
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        self._lock = lock

    def close(self) -> None:
        """Release the writer lock (reading needs no close)."""
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EpisodeStore({self.path!r}, episodes={self.num_episodes}, steps={self.num_steps})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
