"""EpisodeStore: the only code that knows the Zarr layout of a teleworld dataset (see recorder/schema.py)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
from zarr.codecs.sharding import MAX_UINT_64, ShardingCodec, ShardingCodecIndexLocation
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import _get_loop, collect_aiterator

from recorder.precode import Precoder
from recorder.schema import (
    CONTACT_SPECS,
    EPISODES_KEY,
    REQUIRED_INFO,
    ROOT_KEY,
    SCHEMA_VERSION,
    TAIL_FILE,
    WRITTEN_KEY,
    ArraySpec,
    parse_version,
    step_specs,
)
from teleworld.errors import TeleworldError

CHUNK_BYTES = 2 * 1024 * 1024  # target uncompressed bytes per chunk, along time
MAX_CHUNK_STEPS = 16384
FRAME_CHUNK = 16  # frames per compressed inner chunk of a frame shard
CAPACITY_BLOCKS = 8  # arrays start with this many time blocks of capacity and grow by at least as many at once
CONTACTS_PER_STEP = 8  # contact rows per chunk = time chunk x this (a typical upper count of contacts per step)
LOCK_NAME = ".teleworld.lock"


def compressor(dtype: str) -> zarr.codecs.BloscCodec:
    """Blosc zstd level 3; byte shuffle for multi-byte types (chosen by measurement, docs/schema.md)."""
    shuffle = "noshuffle" if np.dtype(dtype).itemsize == 1 else "shuffle"
    return zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


def chunk_steps(spec: ArraySpec, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Steps per chunk so that one chunk holds about chunk_bytes of raw data."""
    step_bytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    return int(np.clip(chunk_bytes // max(step_bytes, 1), 1, MAX_CHUNK_STEPS))


def time_chunk(specs: dict[str, ArraySpec], chunk_bytes: int = CHUNK_BYTES) -> int:
    """The one time chunking of every data/ array: about chunk_bytes per chunk of the largest per-step array.

    Sharing it keeps flushes on chunk boundaries for every array at once; sizing small arrays by bytes instead
    would give chunks of thousands of steps that zarr re-encodes whole (fill included) at every append.
    """
    steps = min(chunk_steps(spec, chunk_bytes) for spec in specs.values())
    return steps - steps % FRAME_CHUNK if steps >= FRAME_CHUNK else steps


def is_frames(spec: ArraySpec) -> bool:
    """Camera frames (H, W, 3) uint8: stored sharded, see create()."""
    return spec.dtype == "uint8" and len(spec.shape) == 3


def is_url(path: str) -> bool:
    """True for fsspec URLs such as ``s3://bucket/x.zarr`` or ``file:///tmp/x.zarr``."""
    return "://" in path


class EpisodeStore:
    """A directory of time-major arrays with committed episode boundaries in meta/episode_ends.

    Make one with :meth:`create` or :meth:`open`; never construct directly.
    """

    def __init__(self, root: zarr.Group, path: str, writable: bool):
        self.root, self.path, self.writable = root, path, writable
        self.info: dict = dict(root.attrs[ROOT_KEY])
        self.specs = step_specs(self.info)
        self._arrays: dict[str, zarr.Array] = {}
        self._lock: Path | None = None
        self._ends: dict[str, int] = {}  # next row to write per array, during a flush
        self._meta = root["meta"] if "meta" in root else None
        self._committed: np.ndarray | None = None  # episode_ends cached by the (only) writer; None: read it
        self._pending_info: str | None = None  # the open episode's info, written with the next flush
        self._info_written: tuple[int, str] | None = None  # (row, text) last written to meta/episode_info
        self._tails: dict[str, tuple[int, np.ndarray]] = {}  # per array: (first row, rows) of its last, open chunk
        self._folders: set[Path] = set()  # chunk folders known to exist
        self._open: dict[str, tuple[int, np.ndarray]] = {}  # as _tails, for unsharded frames (written, not held)
        self._shards: dict[str, tuple[int, list[bytes], np.ndarray]] = {}  # per sharded array, its open shard:
        # (first row, its whole inner chunks encoded, the rows of its open inner chunk)
        self._precoder = Precoder()  # frames' inner chunks encoded while the episode is recorded
        marker = self._meta.attrs.get(WRITTEN_KEY) if self._meta is not None else None
        self._written: dict | None = dict(marker) if marker else None  # None: a 1.0 store, lengths are shapes
        self._load_tail()

    # ----- named constructors -----
    @classmethod
    def create(cls, path: str | os.PathLike, info: dict, chunk_bytes: int = CHUNK_BYTES) -> "EpisodeStore":
        """Create an empty store for a scene described by ``info`` (see Scene.info()); refuses to overwrite."""
        path = str(path)
        if not is_url(path) and Path(path).exists():
            raise TeleworldError(f"{path} already exists; choose a new path or open it to append")
        missing = [k for k in REQUIRED_INFO if k not in info]
        if missing:
            raise TeleworldError(f"dataset info lacks {', '.join(missing)}")
        # built under a temporary name and renamed into place: a store either exists complete or not at all
        build = path if is_url(path) else str(Path(path).with_name(f"{Path(path).name}.creating-{os.getpid()}"))
        root = zarr.open_group(build, mode="w-", zarr_format=3)
        steps = time_chunk(step_specs(info), chunk_bytes)
        arrays = [(f"data/{k}", s, steps) for k, s in step_specs(info).items()]
        arrays += [(f"contacts/{k}", s, steps * CONTACTS_PER_STEP) for k, s in CONTACT_SPECS.items()]
        for name, spec, rows in arrays:
            # frames: one shard file per time block, compressed in inner chunks of FRAME_CHUNK frames, so the
            # partial block an episode end leaves is re-encoded one inner chunk at a time, and windows read less
            sharded = is_frames(spec) and rows % FRAME_CHUNK == 0
            root.create_array(name, shape=(rows * CAPACITY_BLOCKS, *spec.shape), dtype=spec.dtype,
                              compressors=compressor(spec.dtype),
                              chunks=(FRAME_CHUNK if sharded else rows, *spec.shape),
                              shards=(rows, *spec.shape) if sharded else None)
        # capacity from the start (rows past the written mark and the committed ends are not data)
        root.create_array("meta/episode_info", shape=(1024,), chunks=(1024,), dtype=str)
        root.create_array("meta/episode_ends", shape=(4096,), chunks=(4096,), dtype="int64", fill_value=-1)
        root["meta"].attrs[WRITTEN_KEY] = {"steps": 0, "contact_rows": 0}
        root.attrs[ROOT_KEY] = {**{k: v for k, v in info.items() if k != "schema_version"},
                                "schema_version": SCHEMA_VERSION}
        root.attrs[EPISODES_KEY] = {"deleted": [], "split": None}
        if build != path:
            os.rename(build, path)
            root = zarr.open_group(path, mode="r+")
        store = cls(root, path, writable=True)
        store._acquire_lock()
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "EpisodeStore":
        """Open an existing store for reading (``r``) or appending (``a``, takes the writer lock)."""
        path = str(path)
        if not is_url(path) and not Path(path).exists():
            moved = Path(f"{path}.old")
            hint = f" (a rewrite was interrupted: the original is {moved})" if moved.exists() else ""
            raise TeleworldError(f"no dataset at {path}{hint}")
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
        store = cls(root, path, writable=mode != "r")
        store._check_layout()
        if store.writable:
            store._acquire_lock()
        return store

    def _check_layout(self) -> None:
        """Every array of the schema is present with the right per-step shape and dtype."""
        expected = {f"data/{k}": s for k, s in self.specs.items()}
        expected.update({f"contacts/{k}": s for k, s in CONTACT_SPECS.items()})
        expected.update({"meta/episode_ends": ArraySpec((), "int64"), "meta/episode_info": ArraySpec((), "")})
        for name, spec in expected.items():
            try:
                arr = self.arr(name)
            except (KeyError, FileNotFoundError, TeleworldError):
                raise TeleworldError(f"{self.path} is damaged: array {name} is missing") from None
            if tuple(arr.shape[1:]) != spec.shape or (spec.dtype and arr.dtype != np.dtype(spec.dtype)):
                raise TeleworldError(f"{self.path} is damaged: {name} is {arr.dtype}{list(arr.shape[1:])}, "
                                     f"the schema says {spec.dtype}{list(spec.shape)}")

    # ----- raw access -----
    def arr(self, name: str) -> zarr.Array:
        """An array by its path in the store (``data/action``, ``contacts/pos``, ``meta/episode_ends``).

        Writes through it store every chunk, all-fill ones too (zarr skips those by default), so that a chunk
        file missing from the written range is known to be lost (see missing_blocks)."""
        if name not in self._arrays:
            try:
                self._arrays[name] = self.root[name].with_config({"write_empty_chunks": True})
            except Exception as exc:
                raise TeleworldError(f"{self.path}: cannot open {name} ({type(exc).__name__})") from None
        return self._arrays[name]

    def read(self, name: str, sel: slice | int | np.ndarray = slice(None)) -> np.ndarray:
        """Read a slice, an index or (integer array) the given rows of an array; damage becomes one clear error."""
        try:
            arr = self.arr(name)
            values = arr.oindex[sel] if isinstance(sel, np.ndarray) else arr[sel]
        except TeleworldError:
            raise
        except Exception as exc:
            raise TeleworldError(f"{self.path}: {name} cannot be read ({type(exc).__name__}: {exc}); "
                                 "run `teleworld data validate`") from None
        return self.with_tail(name, sel, values)

    def with_tail(self, name: str, sel: slice | int | np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` read straight from zarr at ``sel`` with the rows a tail file holds put in (for callers that
        index zarr arrays themselves, see ``array``)."""
        tail = self._tail_of(name)
        return values if tail is None else overlay(values, sel, self.arr(name).shape[0], *tail)

    def _tail_of(self, name: str) -> tuple[int, np.ndarray] | None:
        """(first row, rows) of the open chunk of an unsharded array that the tail file holds, if any."""
        tail = self._tails.get(name)
        return tail if tail is not None and len(tail[1]) else None

    def block(self, name: str) -> int:
        """Rows per file of an array along time (its shard, else its chunk): the unit of whole writes."""
        arr = self.arr(name)
        return int((arr.shards or arr.chunks)[0])

    @property
    def stores_every_chunk(self) -> bool:
        """True from schema 1.2: every chunk of the written range has a file, so a missing file is lost data."""
        return parse_version(self.info.get("schema_version", "0.0")) >= (1, 2)

    def missing_blocks(self, name: str, rows: int) -> list[int]:
        """Time blocks (shard or chunk files) of an array that hold rows [0, rows) but have no file in the store."""
        arr = self.arr(name)
        prefix = f"{arr.store_path.path}/" if arr.store_path.path else ""
        stored = set(collect_aiterator(arr.store_path.store.list_prefix(prefix)))
        tail = (0,) * (arr.ndim - 1)
        count = -(-rows // self.block(name))
        held = self._tail_of(name)  # the open block lives in the tail file until the writer closes the store
        skip = held[0] // self.block(name) if held is not None else -1
        return [i for i in range(count)
                if i != skip and prefix + arr.metadata.encode_chunk_key((i, *tail)) not in stored]

    # ----- committed episodes -----
    @property
    def episode_ends(self) -> np.ndarray:
        """Exclusive cumulative ends of committed episodes (int64).

        The array may be longer than the episodes (capacity, filled with -1; a crash's uncommitted end): the
        committed episodes are its increasing prefix that the written data covers. The writer, holding the lock,
        keeps them in memory instead of reading them at every commit."""
        if self._committed is not None:
            return self._committed.copy()
        ends = self.read("meta/episode_ends")
        length = self.data_length()
        n = 0
        prev = 0
        for end in ends:  # committed = the increasing prefix that the data covers
            if end <= prev or end > length:
                break
            prev, n = int(end), n + 1
        if self.writable:
            self._committed = ends[:n].copy()
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
        return sorted(self.specs)

    def data_length(self) -> int:
        """Steps durably written under data/, committed or not (arrays may be longer: capacity, a crash's rest)."""
        shortest = min(self.arr(f"data/{k}").shape[0] for k in self.keys)
        return shortest if self._written is None else min(int(self._written["steps"]), shortest)

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
        return {k: self.read(f"data/{k}", sl) for k in (keys or self.keys)}

    def episode_contacts(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(per-step offsets of length T+1, contact rows) of one episode."""
        sl = self.episode_slice(index)
        counts = self.read("data/contact_count", slice(0, sl.stop))
        starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        first, last = int(starts[sl.start]), int(starts[sl.stop])
        rows = {k: self.read(f"contacts/{k}", slice(first, last)) for k in CONTACT_SPECS}
        return starts[sl.start : sl.stop + 1] - first, rows

    def episode_info(self, index: int) -> dict:
        """The JSON metadata stored with one episode."""
        sl = self.episode_slice(index)
        raw = str(self.read("meta/episode_info", index % self.num_episodes))
        try:
            info = json.loads(raw)
        except json.JSONDecodeError:
            raise TeleworldError(f"{self.path}: meta/episode_info[{index}] is not JSON: {raw[:40]!r}") from None
        info.setdefault("length", sl.stop - sl.start)
        return info

    def update_episode_info(self, index: int, **fields) -> None:
        """Add or change fields of a committed episode's metadata (the steps are untouched)."""
        self._require_writable()
        if not 0 <= index < self.num_episodes:
            raise TeleworldError(f"episode {index} does not exist ({self.num_episodes} committed)")
        self._write_row("meta/episode_info", index, json.dumps({**self.episode_info(index), **fields}))
        if not is_url(self.path):  # the row is in the open chunk the tail file holds, or in a chunk file
            self._write_tail()

    def array(self, key: str) -> zarr.Array:
        """A data/ array by key, for bulk reads (pass what they read through ``with_tail``: while a writer has the
        store open, or after a crash, the last open chunk of an unsharded array is in the tail file)."""
        if key not in self.specs:
            raise TeleworldError(f"dataset has no array data/{key}; it has {', '.join(self.keys)}")
        return self.arr(f"data/{key}")

    # ----- deletion marks and the split (root attribute, rewritten atomically) -----
    @property
    def edits(self) -> dict:
        """{'deleted': [episode, ...], 'split': {'train': [...], 'val': [...], ...} or None}."""
        return {"deleted": [], "split": None, **dict(self.root.attrs.get(EPISODES_KEY, {}))}

    def set_edits(self, **changes) -> None:
        """Update deletion marks or the split."""
        self._require_writable()
        self.root.attrs[EPISODES_KEY] = {**self.edits, **changes}

    def active_episodes(self, split: str | None = None) -> np.ndarray:
        """Committed episodes not marked deleted, optionally only those of a stored split ('train' / 'val')."""
        keep = np.setdiff1d(np.arange(self.num_episodes), self.edits["deleted"])
        if split is not None:
            stored = self.edits["split"]
            if not stored:
                raise TeleworldError(f"{self.path} has no stored split; run `teleworld data split` first")
            if split not in ("train", "val"):
                raise TeleworldError(f"unknown split {split!r}; the store has train and val")
            keep = np.intersect1d(keep, stored[split])
        return keep.astype(np.int64)

    # ----- writing (EpisodeWriter drives these) -----
    def uncommitted_steps(self) -> int:
        """Steps durably written past the last committed episode (left by a crash or an open episode)."""
        return self.data_length() - self.num_steps

    def committed_contact_rows(self) -> int:
        return int(self.read("data/contact_count", slice(0, self.num_steps)).sum(dtype=np.int64))

    @property
    def written(self) -> dict:
        """{'steps', 'contact_rows'} durably written by the last flush (the salvage limit after a crash): the tail
        file's mark while it exists, else meta's attribute."""
        if self._written is None:
            return {"steps": self.data_length(), "contact_rows": min(self.arr(f"contacts/{k}").shape[0]
                                                                     for k in CONTACT_SPECS)}
        return dict(self._written)

    def mark_written(self) -> None:
        """Record that everything appended so far is on disk (called after a flush that commits nothing)."""
        self._persist_written()

    def _persist_written(self) -> None:
        """Record the mark: in the tail file with the open chunks (local stores), else in meta's attribute."""
        self._note_written()
        if is_url(self.path):
            self._meta.attrs[WRITTEN_KEY] = self.written
        else:
            self._write_tail()

    def _note_written(self) -> None:
        """Advance the mark in memory to what the appends since the last one wrote."""
        if self._ends:
            mark = self.written
            self._written = {"steps": min(self._ends.get(f"data/{k}", mark["steps"]) for k in self.keys),
                             "contact_rows": min(self._ends.get(f"contacts/{k}", mark["contact_rows"])
                                                 for k in CONTACT_SPECS)}
            self._ends.clear()

    def _set_written(self, steps: int, rows: int) -> None:
        self._ends.clear()
        self._written = {"steps": int(steps), "contact_rows": int(rows)}
        self._persist_written()

    # ----- the tail file (schema 1.4): open chunks of the unsharded arrays, so a flush writes no partial chunk -----
    def _load_tail(self) -> None:
        """Read the tail file an open or killed writer left: its blocks overlay the chunk files in ``read`` and its
        mark supersedes meta's attribute."""
        if is_url(self.path):
            return
        try:
            raw = (Path(self.path) / TAIL_FILE).read_bytes()
        except FileNotFoundError:
            return
        try:
            self._written, self._tails = decode_tail(raw)
        except Exception as exc:
            raise TeleworldError(f"{self.path} is damaged: {TAIL_FILE} cannot be read ({type(exc).__name__})") \
                from None

    def _write_tail(self) -> None:
        """Atomically replace the tail file: the written mark and every unsharded array's open chunk."""
        write_file(Path(self.path) / TAIL_FILE, encode_tail(self.written, self._tails))

    def _checkpoint(self) -> None:
        """Store the tail file's open chunks as chunk files and its mark as meta's attribute, then delete it: a
        closed store is plain Zarr, laid out as in schema 1.3. What is moved is the file, not this writer's memory,
        which a write that failed (a full disk) may have left ahead of what is durable."""
        path = Path(self.path) / TAIL_FILE
        if is_url(self.path) or not path.exists():
            return
        self._committed, self._tails = None, {}  # back to the durable state, whatever failed before
        self._written, self._tails = decode_tail(path.read_bytes())
        for name, (first, rows) in self._tails.items():
            if len(rows):
                arr = self.arr(name)
                self._store_chunk(arr, first // int(arr.chunks[0]), rows)
        self._meta.attrs[WRITTEN_KEY] = self._written
        path.unlink()

    def truncate_uncommitted(self) -> int:
        """Drop everything past the last committed episode; returns the number of steps dropped."""
        self._require_writable()
        dropped = self.uncommitted_steps()
        self._truncate(self.num_steps, self.committed_contact_rows(), self.num_episodes)
        return dropped

    def _truncate(self, steps: int, rows: int, episodes: int) -> None:
        """Cut every array to the given lengths: the mark (and tail file) first, meta's attribute, then the arrays."""
        self._committed, self._pending_info, self._info_written = None, None, None
        self._shards.clear()  # frames' open shards and chunks are read back when next extended
        self._precoder.forget()
        self._open.clear()
        for name, (first, kept) in list(self._tails.items()):
            limit = steps if name.startswith("data/") else rows if name.startswith("contacts/") else episodes
            self._tails[name] = (first, kept[: max(0, limit - first)])
        self._set_written(steps, rows)
        marker = self._meta.attrs.get(WRITTEN_KEY)
        if marker and (marker["steps"] > steps or marker["contact_rows"] > rows):
            self._meta.attrs[WRITTEN_KEY] = {"steps": min(marker["steps"], steps),
                                             "contact_rows": min(marker["contact_rows"], rows)}
        for k in self.keys:
            self._resize(f"data/{k}", steps)
        for k in CONTACT_SPECS:
            self._resize(f"contacts/{k}", rows)
        self._resize("meta/episode_info", episodes)
        self._resize("meta/episode_ends", episodes)

    def next_row(self, path: str) -> int:
        """The row the next append to ``data/<key>`` or ``contacts/<key>`` writes."""
        mark = self.written
        return self._ends.get(path, mark["steps"] if path.startswith("data/") else mark["contact_rows"])

    def precode_rows(self, path: str) -> int:
        """Rows per inner chunk if ``path``'s chunks can be encoded ahead of their append (``precode``), else 0:
        frames of a local store, sharded."""
        arr = self.arr(path)
        return int(arr.chunks[0]) if arr.shards is not None and self._writes_directly(arr) else 0

    def precode(self, path: str, first: int, rows: np.ndarray) -> None:
        """Start encoding one whole inner chunk (``precode_rows`` rows from row ``first``, a multiple of it) in
        the background; the append that later stores exactly these rows there takes the bytes."""
        arr = self.arr(path)
        self._precoder.submit(path, first, rows, lambda block: self._encode_inner(arr, block))

    def append(self, path: str, values: np.ndarray) -> None:
        """Append rows along time to ``data/<key>`` or ``contacts/<key>`` (one write per call)."""
        self.append_many({path: values})

    def append_many(self, values: dict[str, np.ndarray]) -> None:
        """Append rows along time to several ``data/<key>`` / ``contacts/<key>`` arrays in one concurrent write.

        The open episode's info (open_episode) goes with it. Arrays grow geometrically (by their length, at least
        CAPACITY_BLOCKS time blocks), so resizes (a metadata rewrite each) are rare; the rows beyond the
        ``written`` mark are not data.
        Returns when every write is on disk (then mark_written, or commit_episode, which marks).
        """
        writes, direct, ends = [], [], {}
        for path, rows in values.items():
            arr = self.arr(path)
            start = self.next_row(path)
            end = start + len(rows)
            if end > arr.shape[0]:
                grow = max(self.block(path) * CAPACITY_BLOCKS, arr.shape[0])
                arr.resize((-(-end // grow) * grow, *arr.shape[1:]))
            if len(rows):
                (direct if self._writes_directly(arr) else writes).append((arr, slice(start, end), rows))
            ends[path] = end
        info = None
        if self._pending_info is not None:
            info = (self.num_episodes, self._pending_info)
            arr = self._grow("meta/episode_info", info[0] + 1)
            if self._writes_directly(arr):
                direct.append((arr, slice(info[0], info[0] + 1), np.array([info[1]], dtype=arr.dtype)))
            else:
                writes.append((arr, info[0], np.array(info[1], dtype=object)))
        self._write(writes, direct)
        self._ends.update(ends)
        if info is not None:
            self._pending_info, self._info_written = None, info

    def _write(self, writes: list[tuple[zarr.Array, slice | int, np.ndarray]],
               direct: list[tuple[zarr.Array, slice, np.ndarray]] = ()) -> None:
        """Several array writes at once, every one on disk when this returns.

        ``writes`` (fsspec stores) go through zarr, concurrently in one event-loop round trip; ``direct`` ones (a
        local store's, see _writes_directly) are encoded and stored by this thread meanwhile, sharded ones (frames)
        last, so that their chunks still being encoded in the background (precode) finish meanwhile."""
        direct = sorted(direct, key=lambda write: write[0].shards is not None)
        if not writes:
            for arr, sel, rows in direct:
                (self._write_shards if arr.shards else self._write_chunks)(arr, sel, rows)
            return

        async def write_all() -> None:
            await asyncio.gather(*(arr._async_array.setitem(sel, rows) for arr, sel, rows in writes))

        pending = asyncio.run_coroutine_threadsafe(write_all(), _get_loop())
        try:
            for arr, sel, rows in direct:
                (self._write_shards if arr.shards else self._write_chunks)(arr, sel, rows)
        finally:
            pending.result()

    def _writes_directly(self, arr: zarr.Array) -> bool:
        """Arrays of a local store whose codecs all encode synchronously (bytes + blosc) are written by this
        thread: unsharded ones by _write_chunks, frames (sharded along time only, index at the end) by
        _write_shards. fsspec stores go through zarr."""
        if is_url(self.path) or arr.metadata.zarr_format != 3:
            return False
        codecs = arr.metadata.codecs
        if arr.shards is not None:
            sharding = codecs[0]
            if (len(codecs) != 1 or not isinstance(sharding, ShardingCodec) or tuple(arr.chunks[1:]) != arr.shape[1:]
                    or sharding.index_location != ShardingCodecIndexLocation.end):
                return False
            codecs = (*sharding.codecs, *sharding.index_codecs)
        return all(hasattr(c, "_encode_sync") for c in codecs)

    def _write_shards(self, arr: zarr.Array, sel: slice, rows: np.ndarray) -> None:
        """Store rows [sel.start, sel.stop) of a sharded array (frames) as whole shard files assembled here, as
        zarr's sharding codec lays them out: the inner chunks this session already encoded are reused, so only new
        rows are encoded (and the open inner chunk again), and nothing is read back but once after opening."""
        name = arr.store_path.path
        shard, inner = int(arr.shards[0]), int(arr.chunks[0])
        first = sel.start // shard * shard
        cached = self._shards.get(name)
        if cached is None or cached[0] != first or first + len(cached[1]) * inner + len(cached[2]) != sel.start:
            known = self.read(name, slice(first, sel.start)) if sel.start > first else \
                np.zeros((0, *arr.shape[1:]), arr.dtype)
            whole = len(known) // inner * inner
            cached = (first, [self._encode_inner(arr, known[i : i + inner]) for i in range(0, whole, inner)],
                      known[whole:])
        first, encoded, _ = cached
        block = np.concatenate([cached[2], np.asarray(rows, dtype=arr.dtype)])
        whole, start = len(block) // inner * inner, first + len(encoded) * inner
        for offset in range(0, whole, inner):
            chunk = block[offset : offset + inner]
            done = self._precoder.take(name, start + offset, chunk)
            encoded.append(self._encode_inner(arr, chunk) if done is None else done)
            if len(encoded) == shard // inner:  # a full shard: stored once, never again
                self._store_shard(arr, first // shard, encoded)
                first, encoded = first + shard, []
        rest = block[whole:].copy()
        if len(rest) or encoded:
            self._store_shard(arr, first // shard, encoded + ([self._encode_inner(arr, rest)] if len(rest) else []))
        self._shards[name] = (first, encoded, rest)
        self._precoder.forget(name, before=start + whole)

    def _encode_inner(self, arr: zarr.Array, rows: np.ndarray) -> bytes:
        """One inner chunk of a sharded array (rows past ``rows`` are fill), encoded with its inner codecs."""
        sharding, size = arr.metadata.codecs[0], int(arr.chunks[0])
        if len(rows) < size:
            rows = np.concatenate([rows, np.full((size - len(rows), *rows.shape[1:]), arr.fill_value, arr.dtype)])
        shard_spec = arr.metadata.get_chunk_spec((0,) * arr.ndim, arr._async_array.config, default_buffer_prototype())
        spec = sharding._get_chunk_spec(shard_spec)
        data = spec.prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(rows))
        for codec in sharding.codecs:
            data = codec._encode_sync(data, spec)
        return data.to_bytes()

    def _store_shard(self, arr: zarr.Array, index: int, chunks: list[bytes]) -> None:
        """Write shard ``index`` from its leading inner chunks (encoded; the rest absent, so fill): the chunks, then
        the index of (offset, length) pairs encoded with the index codecs (crc32c), atomically."""
        sharding = arr.metadata.codecs[0]
        per_shard = tuple(s // c for s, c in zip(arr.shards, arr.chunks))
        table = np.full((*per_shard, 2), MAX_UINT_64, dtype="<u8")
        lengths = np.array([len(c) for c in chunks], dtype="<u8")
        table.reshape(-1, 2)[: len(chunks)] = np.stack([np.cumsum(lengths) - lengths, lengths], axis=1)
        spec = sharding._get_index_chunk_spec(per_shard)
        data = spec.prototype.nd_buffer.from_numpy_array(table)
        for codec in sharding.index_codecs:
            data = codec._encode_sync(data, spec)
        key = arr.metadata.encode_chunk_key((index, *(0,) * (arr.ndim - 1)))
        write_file(self._chunk_path(arr, key), b"".join([*chunks, data.to_bytes()]))

    def _write_chunks(self, arr: zarr.Array, sel: slice, rows: np.ndarray) -> None:
        """Store rows [sel.start, sel.stop) of an unsharded array as chunk files, encoded here with the array's own
        codecs, minus zarr's per-chunk thread hops and its read of the chunk being extended. The rows of the open
        chunk that precede the write are kept from the last write (read back once after opening). Only whole
        chunks are written: the open one stays in memory and goes to the tail file with the next mark or commit,
        so each chunk file is written once, whole. Unsharded frames (stores whose time block is not a multiple of
        FRAME_CHUNK) are too big for the tail file: their open chunk is written too, fill after it."""
        name = arr.store_path.path
        size = int(arr.chunks[0])
        first, meta = sel.start // size * size, name.startswith("meta/")
        held = not is_frames(ArraySpec(tuple(arr.shape[1:]), str(arr.dtype)))
        cache = self._tails if held else self._open
        need = sel.start - first
        known = cache.get(name)
        if known is None or known[0] != first or len(known[1]) < need:  # read back (once after opening)
            # a meta/ row (one per episode) may be rewritten, so the rows after it are kept; data is only appended
            stop = min(first + size, max(self.num_episodes, sel.stop)) if meta else sel.start
            known = (first, self.read(name, slice(first, stop)) if stop > first else np.zeros((0, *arr.shape[1:]),
                                                                                             arr.dtype))
        kept = known[1] if meta else known[1][:need]
        block = np.concatenate([kept[:need], np.asarray(rows, dtype=arr.dtype), kept[need + len(rows):]])
        last = len(block) // size * size
        for offset in range(0, last if held else len(block), size):
            self._store_chunk(arr, (first + offset) // size, block[offset : offset + size])
        cache[name] = (first + last, block[last:].copy())

    def _store_chunk(self, arr: zarr.Array, index: int, rows: np.ndarray) -> None:
        """Write chunk ``index`` of an unsharded array from its leading rows (the rest fill: past the ``written``
        mark, not data), atomically (write_file: temp file, then rename) as zarr would."""
        size = int(arr.chunks[0])
        if len(rows) < size:
            rows = np.concatenate([rows, np.full((size - len(rows), *rows.shape[1:]), arr.fill_value, arr.dtype)])
        spec = arr.metadata.get_chunk_spec((0,) * arr.ndim, arr._async_array.config, default_buffer_prototype())
        data = spec.prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(rows))
        for codec in arr.metadata.codecs:
            data = codec._encode_sync(data, spec)
        key = arr.metadata.encode_chunk_key((index, *(0,) * (arr.ndim - 1)))
        write_file(self._chunk_path(arr, key), data.as_buffer_like())

    def _chunk_path(self, arr: zarr.Array, key: str) -> Path:
        """Where a chunk or shard file of ``arr`` goes, its folder made first (once per folder and session)."""
        path = Path(self.path) / arr.store_path.path / key
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        return path

    def _write_row(self, path: str, index: int, value: str | int) -> None:
        """Write one row of a meta/ array, grown in whole chunks to hold it."""
        arr = self._grow(path, index + 1)
        if self._writes_directly(arr):
            self._write_chunks(arr, slice(index, index + 1), np.array([value], dtype=arr.dtype))
        else:
            arr[index] = value

    def _grow(self, path: str, rows: int) -> zarr.Array:
        """The array, made at least ``rows`` long in whole chunks (capacity: most commits resize nothing)."""
        arr = self.arr(path)
        if arr.shape[0] < rows:
            chunk = int(arr.chunks[0])
            arr.resize((-(-rows // chunk) * chunk, *arr.shape[1:]))
        return arr

    def open_episode(self, info: dict) -> None:
        """Stage the metadata of the episode being written: it is stored with the next flush of its steps, so a
        crash can salvage the flushed steps with their seed (nothing flushed, nothing to salvage)."""
        self._require_writable()
        self._pending_info = json.dumps(info)

    def commit_episode(self, info: dict) -> int:
        """Record an episode whose steps are all written (appended; marked or not): the mark, its info, then its
        end (the commit). In a local store these rows go to the tail file, so the commit is one atomic write of
        the mark, the info and the end; in an fsspec store, the attribute, the info row, then the end."""
        self._require_writable()
        if is_url(self.path) and self._ends:
            self._persist_written()
        self._note_written()
        ends = self.episode_ends
        n = len(ends)
        length = self.data_length()
        if length <= (int(ends[-1]) if n else 0):
            raise TeleworldError("cannot commit an empty episode")
        text = json.dumps(info)
        if self._info_written != (n, text):  # EpisodeWriter.end() stages it with the last flush
            self._write_row("meta/episode_info", n, text)
        self._write_row("meta/episode_ends", n, length)
        if not is_url(self.path):
            self._write_tail()
        self._committed, self._pending_info, self._info_written = np.append(ends, np.int64(length)), None, None
        return n

    def write_episode(self, steps: dict[str, np.ndarray], contacts: dict[str, np.ndarray], info: dict) -> int:
        """Append a whole episode in one write per array and commit it (copies, merges, bulk imports)."""
        self._require_writable()
        if self.uncommitted_steps():
            self.truncate_uncommitted()
        lengths = {len(steps[k]) for k in self.keys}
        if len(lengths) != 1:
            raise TeleworldError(f"episode arrays disagree on length: {sorted(lengths)}")
        info = {**info, "length": lengths.pop()}
        self.open_episode(info)  # stored with the steps, so the commit writes only the end
        self.append_many({**{f"data/{k}": np.asarray(steps[k], dtype=self.specs[k].dtype) for k in self.keys},
                          **{f"contacts/{k}": np.asarray(contacts[k], dtype=spec.dtype).reshape(-1, *spec.shape)
                             for k, spec in CONTACT_SPECS.items()}})
        return self.commit_episode(info)  # the mark goes with the commit

    def salvage(self) -> dict:
        """Commit the durably written part of an uncommitted tail as an episode marked partial; cut the rest.

        Returns {'salvaged_steps', 'dropped_steps', 'episode'} (episode is None when nothing was salvageable).
        """
        self._require_writable()
        start, rows0, n = self.num_steps, self.committed_contact_rows(), self.num_episodes
        tail = self.uncommitted_steps()
        mark = self.written
        steps, rows = int(mark["steps"]), int(mark["contact_rows"])
        counts = self.read("data/contact_count", slice(start, steps)) if steps > start else np.zeros(0)
        ok = (start < steps <= self.data_length() and rows == rows0 + int(counts.sum())
              and rows <= min(self.arr(f"contacts/{k}").shape[0] for k in CONTACT_SPECS))
        if not ok:
            self._truncate(start, rows0, n)
            return {"salvaged_steps": 0, "dropped_steps": tail, "episode": None}
        info = {}
        if self.arr("meta/episode_info").shape[0] > n:
            try:  # an empty row is capacity: the writer died before its first flush stored the info
                info = json.loads(str(self.read("meta/episode_info", n)))
            except json.JSONDecodeError:
                info = {}
        self._truncate(steps, rows, n)
        index = self.commit_episode({**info, "length": steps - start, "partial": True})
        return {"salvaged_steps": steps - start, "dropped_steps": tail - (steps - start), "episode": index}

    def _resize(self, path: str, length: int) -> None:
        arr = self.arr(path)
        if arr.shape[0] != length:
            arr.resize((length, *arr.shape[1:]))
        if path == "meta/episode_ends":
            self._committed = None

    def _require_writable(self) -> None:
        if not self.writable:
            raise TeleworldError(f"{self.path} is open read-only")

    # ----- single-writer lock -----
    def _acquire_lock(self) -> None:
        if is_url(self.path):
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
        """Move the tail file into the chunk files and release the writer lock (reading needs no close)."""
        self._precoder.close()
        if self._lock is not None:
            try:
                self._checkpoint()
            finally:
                self._lock.unlink(missing_ok=True)
                self._lock = None

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, exc_type, *_) -> None:
        try:
            self.close()
        except OSError:  # moving the tail file failed: it stays, a valid state readers and the next writer use
            if exc_type is None:  # else the error that ended the block is the one to show
                raise

    def __repr__(self) -> str:
        return f"EpisodeStore({self.path!r}, episodes={self.num_episodes}, steps={self.num_steps})"


def overlay(values: np.ndarray, sel: slice | int | np.ndarray, length: int, first: int, rows: np.ndarray):
    """``values`` read from an array of ``length`` rows at ``sel``, with rows [first, first + len(rows)) replaced by
    ``rows`` (an open block held in the tail file)."""
    stop = first + len(rows)
    if isinstance(sel, slice) and sel.step in (None, 1):
        start, end, _ = sel.indices(length)
        lo, hi = max(start, first), min(end, stop)
        if lo < hi:
            values[lo - start : hi - start] = rows[lo - first : hi - first]
        return values
    if isinstance(sel, slice):
        index = np.arange(*sel.indices(length))
    else:
        index = np.asarray(sel)
        index = np.where(index < 0, index + length, index)
    if index.ndim == 0:
        return rows[int(index) - first] if first <= index < stop else values
    hit = (index >= first) & (index < stop)
    values[hit] = rows[index[hit] - first]
    return values


def encode_tail(written: dict, blocks: dict[str, tuple[int, np.ndarray]]) -> bytes:
    """The tail file's bytes: an 8-byte little-endian header length, a JSON header ({written, blocks: {array:
    {first, dtype, shape}}}; strings, dtype "str", as a "values" list in it), then the other blocks' rows, C order,
    in header order."""
    numeric = {name: rows for name, (_, rows) in blocks.items() if rows.dtype.kind not in "OTU"}
    header = {"written": written,
              "blocks": {name: {"first": int(first), "shape": list(rows.shape),
                                **({"dtype": rows.dtype.str} if name in numeric else
                                   {"dtype": "str", "values": [str(v) for v in rows]})}
                         for name, (first, rows) in blocks.items()}}
    text = json.dumps(header).encode()
    return b"".join([len(text).to_bytes(8, "little"), text,
                     *(np.ascontiguousarray(rows).tobytes() for rows in numeric.values())])


def decode_tail(raw: bytes) -> tuple[dict, dict[str, tuple[int, np.ndarray]]]:
    """(written mark, {array: (first row, rows)}) from a tail file's bytes (encode_tail)."""
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    blocks, offset = {}, 8 + size
    for name, block in header["blocks"].items():
        if block["dtype"] == "str":
            blocks[name] = (int(block["first"]), np.array(block["values"], dtype=np.dtypes.StringDType()))
            continue
        dtype, shape = np.dtype(block["dtype"]), tuple(block["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        rows = np.frombuffer(raw, dtype, count, offset).reshape(shape).copy()
        blocks[name], offset = (int(block["first"]), rows), offset + count * dtype.itemsize
    if offset != len(raw):
        raise ValueError(f"{len(raw) - offset} bytes past the last block")
    written = header["written"]
    return {"steps": int(written["steps"]), "contact_rows": int(written["contact_rows"])}, blocks


def write_file(path: Path, data) -> None:
    """Atomically replace a file's bytes, as zarr's LocalStore does: a ``*.partial`` temp file, then a rename
    (a kill leaves the old file or the new one, plus at worst a stray temp file that repair removes)."""
    temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
