"""The recorder's EpisodeWriter in a background thread, so that writing never stalls the control loop."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from recorder import EpisodeStore, EpisodeWriter
from recorder.edit import mark_deleted
from teleworld.errors import TeleworldError

MAX_QUEUE = 512  # steps (and commands) waiting to be written


class BackgroundWriter:
    """Same verbs as EpisodeWriter (begin / add / end / discard), executed in order by one worker thread.

    The queue is bounded: if the disk falls behind by ``max_queue`` items, ``add`` waits (``queue_waits``
    counts how often) rather than dropping steps or growing memory without limit. ``end`` and ``discard``
    return futures; ``close`` drains the queue and re-raises a worker error, so nothing is lost silently.
    """

    def __init__(self, store: EpisodeStore, max_queue: int = MAX_QUEUE):
        self._store = store
        self._writer = EpisodeWriter(store)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self.queue_waits = 0
        self.cpu_seconds = 0.0  # CPU time the worker thread has spent writing
        self._thread = threading.Thread(target=self._work, name="teleworld-writer", daemon=True)
        self._thread.start()

    def begin(self, **meta) -> None:
        self._put(self._writer.begin, meta=meta)

    def add(self, step: dict[str, np.ndarray], contacts: dict[str, np.ndarray]) -> None:
        self._put(self._writer.add, step, contacts)

    def end(self, **meta) -> Future:
        """Commit the open episode once its steps are written; the future gives its index."""
        return self._put(self._writer.end, meta=meta)

    def discard(self) -> Future:
        return self._put(self._writer.discard)

    def mark_deleted(self, saved: Future) -> Future:
        """Mark a saved episode (the future ``end`` returned) deleted; readers of active episodes skip it."""
        return self._put(lambda: mark_deleted(self._store, [saved.result()]))

    @property
    def pending(self) -> int:
        """Items not yet written."""
        return self._queue.qsize()

    def close(self) -> None:
        """Write everything queued, stop the thread, and raise if any write failed."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_if_failed()

    def _put(self, fn, *args, meta: dict | None = None) -> Future:
        self._raise_if_failed()
        future: Future = Future()
        item = (fn, args, meta or {}, future)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.queue_waits += 1
            self._queue.put(item)
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, meta, future = item
            if self._error is not None:
                future.set_exception(self._error)
                continue
            start = time.thread_time()
            try:
                future.set_result(fn(*args, **meta))
            except BaseException as exc:  # surfaced to the loop by the next call and by close()
                self._error = exc
                future.set_exception(exc)
            self.cpu_seconds += time.thread_time() - start

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise TeleworldError(f"recording failed: {self._error}") from self._error
