"""A fixed-rate clock for control loops: sleeps to the next tick, measures lateness, counts overruns."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

SPIN = 0.0005  # s: sleep until this close to the tick, then spin (time.sleep overshoots by ~0.1 ms)


class Pacer:
    """Ticks every ``1 / rate`` s. ``tick()`` starts a step, ``wait()`` ends it.

    Lateness is how far a step started after its scheduled time (the jitter). A step that ends after the
    next tick is an overrun: it is counted, and the schedule restarts from now instead of bursting to catch up.
    """

    def __init__(self, rate: float):
        self.period = 1.0 / rate
        self.overruns = 0
        self.lateness: list[float] = []  # s, one per tick
        self.busy: list[float] = []  # s of work per tick (from tick() to wait())
        self._recent: deque[float] = deque(maxlen=50)
        self._next = self._started = time.monotonic()

    def tick(self) -> float:
        """Mark the start of a step; returns its time.monotonic()."""
        now = time.monotonic()
        self.lateness.append(now - self._next)
        self._recent.append(now)
        self._started = now
        return now

    def wait(self) -> None:
        """Sleep until the next tick, or count an overrun when it has already passed."""
        self.busy.append(time.monotonic() - self._started)
        self._next += self.period
        slack = self._next - time.monotonic()
        if slack <= 0:
            self.overruns += 1
            self._next = time.monotonic()
            return
        if slack > SPIN:
            time.sleep(slack - SPIN)
        while time.monotonic() < self._next:
            pass

    @property
    def achieved_rate(self) -> float:
        """Steps per second over the last 50 ticks (0 before two ticks)."""
        if len(self._recent) < 2:
            return 0.0
        return (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])


def jitter_ms(lateness: list[float]) -> tuple[float, float]:
    """(p50, p99) of |lateness| in milliseconds; zeros when there were no ticks."""
    if not lateness:
        return 0.0, 0.0
    values = np.abs(lateness) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))
