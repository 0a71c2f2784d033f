"""One progress display for every long command, on stderr: a rich bar on a terminal, plain timestamped lines in logs.

Off a terminal (nohup, ``ssh -T``, SLURM, CI) a line is printed when a task starts, after its first unit of work,
then at most every ``TELEWORLD_PROGRESS_INTERVAL`` seconds (default 15) and when it ends: done/total, rate, ETA and
the task's status (e.g. the loss terms). Results (tables, summaries) stay on stdout."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from teleworld.errors import TeleworldError

INTERVAL_ENV = "TELEWORLD_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 15.0


def progress_bar(show: bool = True) -> Progress | PlainProgress:
    """Progress on stderr: a rich bar when stderr is a terminal, else plain lines (same add_task/update/advance API).

    Tasks take ``unit=`` (e.g. "steps") for their rate and ``status=`` for free text."""
    if show and not sys.stderr.isatty():
        return PlainProgress(sys.stderr, progress_interval())
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
    )


def progress_interval() -> float:
    """Seconds between plain progress lines: ``TELEWORLD_PROGRESS_INTERVAL`` or the default."""
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None:
        return DEFAULT_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise TeleworldError(f"{INTERVAL_ENV} must be a number of seconds (0 or more), got {raw!r}")
    return seconds


def rate_text(speed: float, unit: str) -> str:
    """e.g. '4.52 steps/s'."""
    return f"{speed:.0f} {unit}/s" if speed >= 100 else f"{speed:.3g} {unit}/s"


def duration_text(seconds: float) -> str:
    """e.g. '42s', '3m14s', '2h05m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RateColumn(ProgressColumn):
    """The task's recent rate in its own unit."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else rate_text(task.speed, task.fields.get("unit", "items")))


@dataclass
class PlainTask:
    """What a plain line reports about one task."""

    description: str
    total: float | None
    completed: float
    fields: dict
    began: float = field(default_factory=time.monotonic)
    last_line: float = 0.0
    reported: float | None = None  # completed as of the last line
    first: float = field(init=False)  # completed when the task started

    def __post_init__(self) -> None:
        self.first = self.completed

    @property
    def finished(self) -> bool:
        return self.total is not None and self.completed >= self.total

    def line(self, note: str = "") -> str:
        """'<time> <description> <done>/<total> (<pct>%), <rate>, ETA|done in <t>, <status>'."""
        count = _count(self.completed) + ("" if self.total is None else f"/{_count(self.total)}")
        parts = [f"{count} ({100 * self.completed / self.total:.0f}%)" if self.total else count]
        elapsed = time.monotonic() - self.began
        speed = (self.completed - self.first) / elapsed if elapsed > 0 else 0.0
        if note:
            parts.append(note)
        else:
            parts.append(rate_text(speed, self.fields.get("unit", "items")))
            if self.finished:
                parts.append(f"done in {duration_text(elapsed)}")
            elif self.total is not None and speed > 0:
                parts.append(f"ETA {duration_text((self.total - self.completed) / speed)}")
        if self.fields.get("status"):
            parts.append(str(self.fields["status"]))
        return f"{datetime.now():%Y-%m-%d %H:%M:%S} {self.description} {', '.join(parts)}"


class PlainProgress:
    """rich.progress.Progress's add_task/update/advance, written as plain timestamped lines (for logs)."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream, self.interval = stream, interval
        self.tasks: list[PlainTask] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        for task in self.tasks:
            if task.reported != task.completed:
                self._write(task, "" if task.finished else "stopped")

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        """Start a task and print its first line; returns its id."""
        self.tasks.append(PlainTask(description, total, completed, {"status": "", **fields}))
        self._write(self.tasks[-1], "started")
        return len(self.tasks) - 1

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        """Change a task; a line follows when work was done and it is the first, due, or the last."""
        task = self.tasks[task_id]
        task.total = task.total if total is None else total
        task.completed = task.completed if completed is None else completed
        task.completed += advance or 0
        task.description = description or task.description
        task.fields.update(fields)
        if task.completed != task.reported and (task.finished or task.reported == task.first
                                                or time.monotonic() - task.last_line >= self.interval):
            self._write(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Add ``advance`` units of work done."""
        self.update(task_id, advance=advance)

    def _write(self, task: PlainTask, note: str = "") -> None:
        print(task.line(note), file=self.stream, flush=True)
        task.last_line, task.reported = time.monotonic(), task.completed


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
