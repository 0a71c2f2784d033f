"""Store health: `validate` checks every invariant of the schema; `repair` deals with a crashed writer's leftovers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recorder.schema import CONTACT_SPECS
from recorder.store import EpisodeStore, is_url
from recorder.windows import episode_starts
from teleworld.progress import progress_bar

FINITE_KEYS = ("action", "qpos", "qvel", "state", "sim_time", "wall_time", "reward")
INCREASING_KEYS = ("sim_time", "wall_time")


@dataclass
class Report:
    """Problems break an invariant of committed data; notes (a crash's uncommitted tail) do not."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(store: EpisodeStore, show_progress: bool = False) -> Report:
    """Check lengths, ends, episode metadata, edits, finiteness, time order, and that every chunk decodes."""
    report = Report()
    ends = store.episode_ends
    n, steps = len(ends), store.num_steps
    _check_bookkeeping(store, ends, report)
    rows = _check_arrays(store, steps, report, show_progress)
    if rows is not None and rows > min(store.arr(f"contacts/{k}").shape[0] for k in CONTACT_SPECS):
        report.problems.append(f"contacts/ hold fewer rows than data/contact_count sums to ({rows})")
    tail = store.uncommitted_steps()
    if tail:
        report.notes.append(f"{tail} uncommitted steps after episode {n - 1} (a crashed or open writer); "
                            "`teleworld data repair` cuts them off, `--salvage` keeps them as a partial episode")
    return report


def _check_bookkeeping(store: EpisodeStore, ends: np.ndarray, report: Report) -> None:
    past = store.read("meta/episode_ends")[len(ends):]
    past = past[past != -1]  # -1: capacity, never written
    if len(past):
        report.notes.append(f"meta/episode_ends has {len(past)} entries past the committed prefix: "
                            f"{past[:3].tolist()}")
    infos = store.read("meta/episode_info")
    if len(infos) < len(ends):
        report.problems.append(f"meta/episode_info has {len(infos)} entries for {len(ends)} episodes")
    starts = episode_starts(ends)
    for i in range(min(len(ends), len(infos))):
        try:
            length = json.loads(str(infos[i])).get("length")
        except json.JSONDecodeError:
            report.problems.append(f"meta/episode_info[{i}] is not JSON")
            continue
        if length is not None and length != ends[i] - starts[i]:
            report.problems.append(f"episode {i}: info says length {length}, episode_ends say {ends[i] - starts[i]}")
    edits = store.edits
    bad = [e for e in edits["deleted"] if not 0 <= e < len(ends)]
    if bad:
        report.problems.append(f"deletion marks name episodes that do not exist: {bad}")
    if edits["split"]:
        named = list(edits["split"].get("train", [])) + list(edits["split"].get("val", []))
        if len(set(named)) != len(named) or any(not 0 <= e < len(ends) for e in named):
            report.problems.append("the stored split names an episode twice or one that does not exist")


def _check_arrays(store: EpisodeStore, steps: int, report: Report, show_progress: bool) -> int | None:
    """Decode every chunk of the committed range; returns the contact rows data/contact_count sums to."""
    names = [f"data/{k}" for k in store.keys]
    total = sum(math.ceil(steps / store.block(nm)) for nm in names)
    rows: int | None = 0
    whole: dict[str, list[np.ndarray]] = {}
    failed: set[str] = set()
    with progress_bar(show_progress) as bar:
        task = bar.add_task("validate", total=total, status="", unit="chunks")
        for name in names:
            arr, key = store.arr(name), name.split("/", 1)[1]
            step = store.block(name)
            _check_stored(store, name, steps, report)
            for start in range(0, steps, step):
                bar.update(task, advance=1, status=name)
                sl = slice(start, min(start + step, steps))
                try:
                    values = store.with_tail(name, sl, arr[sl])  # the open chunk may be in a tail file
                except Exception as exc:
                    report.problems.append(f"{name} steps {sl.start}-{sl.stop - 1} cannot be decoded "
                                           f"({type(exc).__name__})")
                    rows = None if key == "contact_count" else rows
                    failed.add(key)
                    continue
                if key in FINITE_KEYS and not np.isfinite(values).all():
                    bad = sl.start + int(np.argwhere(~np.isfinite(values))[0][0])
                    report.problems.append(f"{name} is not finite at step {bad} (episode {_episode_of(store, bad)})")
                if key == "contact_count" and rows is not None:
                    rows += int(values.sum(dtype=np.int64))
                if key in INCREASING_KEYS:
                    whole.setdefault(key, []).append(values)
    for key, parts in whole.items():
        if key not in failed:
                _check_increasing(store, key, np.concatenate(parts), report)
    for k in CONTACT_SPECS:
        _check_stored(store, f"contacts/{k}", store.written["contact_rows"], report)
        _decode_all(store, f"contacts/{k}", report)
    return rows


def _check_stored(store: EpisodeStore, name: str, rows: int, report: Report) -> None:
    """Every file holding rows [0, rows) exists; before schema 1.2 an absent one may just have been all zeros."""
    missing = store.missing_blocks(name, rows)
    if not missing:
        return
    block = store.block(name)
    first = missing[0] * block
    where = (f"{name}: {len(missing)} chunk file(s) missing, the first for rows {first}-{min(first + block, rows) - 1}"
             " (reads return zeros)")
    if store.stores_every_chunk:
        report.problems.append(where)
    else:
        report.notes.append(f"{where}; schema {store.info.get('schema_version', '1.0')} skipped all-zero chunks, "
                            "so a lost file cannot be told from an empty one")


def _check_increasing(store: EpisodeStore, key: str, values: np.ndarray, report: Report) -> None:
    if len(values) < 2:
        return
    ends = store.episode_ends
    boundary = np.zeros(len(values) - 1, bool)
    boundary[ends[:-1] - 1] = True  # the step across an episode boundary may go back in time
    bad = np.flatnonzero((np.diff(values) <= 0) & ~boundary)
    if len(bad):
        report.problems.append(f"data/{key} does not increase at step {bad[0] + 1} (episode "
                               f"{_episode_of(store, int(bad[0]) + 1)})")


def _decode_all(store: EpisodeStore, name: str, report: Report) -> None:
    arr, step = store.arr(name), store.block(name)
    for start in range(0, store.written["contact_rows"], step):
        try:
            arr[start : start + step]
        except Exception as exc:
            report.problems.append(f"{name} rows {start}-{start + step - 1} cannot be decoded "
                                   f"({type(exc).__name__})")


def _episode_of(store: EpisodeStore, step: int) -> int:
    return int(np.searchsorted(store.episode_ends, step, side="right"))


def repair(store: EpisodeStore, salvage: bool = False) -> dict:
    """Remove a crashed writer's leftovers: cut the uncommitted tail, or salvage it as a partial episode."""
    temp = _stray_temp_files(store)
    for path in temp:
        path.unlink(missing_ok=True)
    if salvage:
        result = store.salvage()
    else:
        result = {"salvaged_steps": 0, "dropped_steps": store.truncate_uncommitted(), "episode": None}
    return {**result, "removed_temp_files": len(temp)}


def _stray_temp_files(store: EpisodeStore) -> list[Path]:
    """zarr's atomic writes go through ``*.partial`` files; a SIGKILL can leave one behind."""
    return [] if is_url(store.path) else sorted(Path(store.path).rglob("*.partial"))
