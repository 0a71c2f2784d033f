"""Rows of a store for training and replay: in RAM when the data fits, chunk-cached reads when it does not.

``step_rows`` gives one data/ array as something indexed like a numpy array (``rows[idx]`` for an integer array
``idx`` of any shape): the array itself read into RAM, or ``ChunkedRows``, which reads whole chunks on demand and
keeps the most recently used ones within a byte budget. The trainer (train.dataset.EpisodeArrays), replay, view
and dream read frames through it; ``WindowLoader`` below samples windows with it for other tools.

Windows are cut by recorder.windows.make_windows (the trainer's own index maths), over the store's active
episodes (deletion marks honoured), optionally one stored split. Works on a local path or any fsspec URL zarr opens.

    loader = WindowLoader("data.zarr", length=16, batch_size=16, split="train")
    batch = loader.sample()          # {key: (16, 16, ...)} numpy arrays
    for batch in loader: ...         # endless; with workers=N, batches come from N processes
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from recorder.store import EpisodeStore
from recorder.windows import make_windows
from teleworld.errors import TeleworldError

CACHE_MODES = ("auto", "ram", "chunks")


def default_cache_bytes() -> int:
    """Half the machine's physical memory, at most 16 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 4 << 30
    return int(min(total // 2, 16 << 30))


class ChunkedRows:
    """An array's first ``rows`` rows, read a whole chunk (along time) at a time and cached, least recently used
    first out, within ``max_bytes`` of decoded data. Indexing: ``rows[idx]`` with an integer array of any shape."""

    def __init__(self, store: EpisodeStore, name: str, rows: int, max_bytes: int):
        arr = store.arr(name)
        self.store, self.name, self.rows = store, name, rows
        self.shape, self.dtype = (rows, *arr.shape[1:]), arr.dtype
        self.chunk = int(arr.chunks[0])  # the inner chunk of a sharded array: the unit zarr decodes
        row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        self.capacity = max(1, int(max_bytes // max(1, row_bytes * self.chunk)))  # chunks kept
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the trainer's prefetch thread and its validation both read
        self.reads = 0  # chunks read from the store so far

    def __len__(self) -> int:
        return self.rows

    def _chunk(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        start = index * self.chunk
        block = self.store.read(self.name, slice(start, min(start + self.chunk, self.rows)))
        self.reads += 1
        self._cache[index] = block
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return block

    def __getitem__(self, idx: np.ndarray | int) -> np.ndarray:
        flat = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(flat) and (flat.min() < 0 or flat.max() >= self.rows):
            raise IndexError(f"{self.name}: rows {flat.min()}..{flat.max()} outside 0..{self.rows - 1}")
        out = np.empty((len(flat), *self.shape[1:]), self.dtype)
        chunks = flat // self.chunk
        with self._lock:
            for index in np.unique(chunks):
                where = np.flatnonzero(chunks == index)
                out[where] = self._chunk(int(index))[flat[where] - index * self.chunk]
        return out.reshape(*np.shape(idx), *self.shape[1:])


def step_rows(store: EpisodeStore, key: str, cache: str = "auto", max_bytes: int | None = None
              ) -> np.ndarray | ChunkedRows:
    """data/``key`` over the committed steps: in RAM (``cache="ram"``, or "auto" when it fits in ``max_bytes``,
    default half the machine's memory) or chunk-cached (``"chunks"``, or "auto" when it does not)."""
    if cache not in CACHE_MODES:
        raise TeleworldError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
    arr, rows = store.array(key), store.num_steps
    budget = default_cache_bytes() if max_bytes is None else max_bytes
    nbytes = rows * arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
    if cache == "ram" or (cache == "auto" and nbytes <= budget):
        return store.read(f"data/{key}", slice(0, rows))
    return ChunkedRows(store, f"data/{key}", rows, budget)


@dataclass
class LoaderConfig:
    """What a loader needs to rebuild itself (in a worker process)."""

    source: str  # local path or fsspec URL of a store
    length: int  # steps per window
    batch_size: int  # windows per batch
    keys: list[str] | None = None  # data/ arrays to load (default: all)
    split: str | None = None  # 'train' / 'val' of the stored split, or None for all active episodes
    episodes: list[int] | None = None  # explicit episodes (overrides split)
    cache: str = "auto"  # auto: RAM if it fits in max_cache_bytes; ram; chunks
    max_cache_bytes: int = field(default_factory=default_cache_bytes)
    seed: int = 0


class WindowLoader:
    """Batches of random windows ``{key: (batch, length, ...)}`` that never cross an episode boundary."""

    def __init__(self, source: str | os.PathLike, length: int, batch_size: int, workers: int = 0, **options):
        self.config = LoaderConfig(str(source), length, batch_size, **options)
        self.workers = workers
        cfg = self.config
        if cfg.cache not in CACHE_MODES:
            raise TeleworldError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cfg.cache!r}")
        if length < 1 or batch_size < 1:
            raise TeleworldError("window length and batch size must be at least 1")
        self.store = EpisodeStore.open(cfg.source)
        self.keys = list(cfg.keys or self.store.keys)
        for key in self.keys:
            self.store.array(key)  # unknown keys fail here, clearly
        if cfg.episodes is None:
            episodes = self.store.active_episodes(cfg.split)
        else:  # explicit episodes override the split, never the deletion marks
            episodes = np.intersect1d(self.store.active_episodes(), np.asarray(cfg.episodes, dtype=np.int64))
        self.episode_ends = self.store.episode_ends
        self.windows = make_windows(self.episode_ends, length, episodes)
        if len(self.windows) == 0:
            raise TeleworldError(f"no window of {length} steps fits in the chosen episodes of {cfg.source}")
        self.cached = cfg.cache == "ram" or (cfg.cache == "auto" and self.nbytes() <= cfg.max_cache_bytes)
        mode = "ram" if self.cached else "chunks"
        self._rows = {k: step_rows(self.store, k, mode, cfg.max_cache_bytes) for k in self.keys}
        self._rng = np.random.default_rng(cfg.seed)

    def nbytes(self) -> int:
        """Raw bytes of the loaded keys over the committed steps."""
        n = self.store.num_steps
        return sum(n * self.store.array(k).dtype.itemsize * int(np.prod(self.store.array(k).shape[1:]))
                   for k in self.keys)

    def sample(self, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """One batch of windows drawn uniformly (with replacement) from all windows."""
        starts = (rng or self._rng).choice(self.windows, self.config.batch_size)
        return self.gather(starts)

    def gather(self, starts: np.ndarray) -> dict[str, np.ndarray]:
        """The windows [start, start + length) as arrays (B, T, ...)."""
        idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(self.config.length)[None]
        return {k: self._rows[k][idx] for k in self.keys}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Endless batches; with workers, each worker process opens the store itself and samples in parallel."""
        if not self.workers:
            while True:
                yield self.sample()
        ctx = mp.get_context("spawn")  # safe next to torch threads and GL contexts
        with ctx.Pool(self.workers, initializer=_init_worker, initargs=(self.config,)) as pool:
            counter = iter(range(1 << 62))
            pending = deque(pool.apply_async(_worker_sample, (next(counter),)) for _ in range(2 * self.workers))
            while True:
                batch = pending.popleft().get()
                pending.append(pool.apply_async(_worker_sample, (next(counter),)))
                yield batch


_WORKER: WindowLoader | None = None


def _init_worker(config: LoaderConfig) -> None:
    global _WORKER
    options = {k: v for k, v in vars(config).items() if k not in ("source", "length", "batch_size")}
    _WORKER = WindowLoader(config.source, config.length, config.batch_size, **options)


def _worker_sample(counter: int) -> dict[str, np.ndarray]:
    return _WORKER.sample(np.random.default_rng([_WORKER.config.seed, counter]))
