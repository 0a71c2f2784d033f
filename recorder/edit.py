"""Editing a store: delete (mark or compact), trim, split, merge. Rewrites go to a new store, then swap in."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recorder.schema import SCHEMA_INFO_KEYS, parse_version
from recorder.store import EpisodeStore, is_url
from recorder.windows import split_episodes
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar


@dataclass(frozen=True)
class Copy:
    """One episode of a rewrite: which store, which episode, which of its steps, what to add to its info."""

    source: EpisodeStore
    episode: int
    first: int = 0
    last: int | None = None  # None: to the end of the episode
    note: tuple[tuple[str, object], ...] = ()


def check_episodes(store: EpisodeStore, episodes: list[int]) -> list[int]:
    """Refuse indices of episodes that do not exist (before anything is changed)."""
    n = store.num_episodes
    missing = [e for e in episodes if not 0 <= e < n]
    if missing:
        raise TeleworldError(f"episode {missing[0]} does not exist; {store.path} has {n} episodes (0-{n - 1})")
    return sorted(set(int(e) for e in episodes))


def mark_deleted(store: EpisodeStore, episodes: list[int]) -> list[int]:
    """Mark episodes deleted (readers of active_episodes skip them; data stays until compaction)."""
    deleted = sorted(set(store.edits["deleted"]) | set(check_episodes(store, episodes)))
    store.set_edits(deleted=deleted)
    return deleted


def restore(store: EpisodeStore, episodes: list[int]) -> list[int]:
    """Remove deletion marks."""
    deleted = sorted(set(store.edits["deleted"]) - set(check_episodes(store, episodes)))
    store.set_edits(deleted=deleted)
    return deleted


def store_split(store: EpisodeStore, val_fraction: float, seed: int) -> dict:
    """Split the active episodes into train/val by whole episode with a seed, and store it in the store."""
    if not 0 <= val_fraction < 1:
        raise TeleworldError(f"--val must be in [0, 1), got {val_fraction}")
    active = store.active_episodes()
    train, val = split_episodes(len(active), val_fraction, seed)
    split = {"train": active[train].tolist(), "val": active[val].tolist(), "seed": seed, "val_fraction": val_fraction}
    store.set_edits(split=split)
    return split


def compact(path: str, show_progress: bool = False) -> dict:
    """Rewrite the store without its deleted episodes; returns {'kept', 'removed'}."""
    with EpisodeStore.open(path, mode="a") as store:
        kept = store.active_episodes().tolist()
        removed = store.num_episodes - len(kept)
        rewrite_in_place(store, [Copy(store, e) for e in kept], show_progress)
    return {"kept": len(kept), "removed": removed}


def trim(path: str, episode: int, start: int, end: int | None, show_progress: bool = False) -> dict:
    """Keep steps [start, end) of one episode (end None: to its end); the other episodes are copied unchanged."""
    with EpisodeStore.open(path, mode="a") as store:
        check_episodes(store, [episode])
        sl = store.episode_slice(episode)
        length = sl.stop - sl.start
        stop = length if end is None else (end if end >= 0 else length + end)
        if not 0 <= start < stop <= length:
            raise TeleworldError(f"cannot trim episode {episode} of {length} steps to [{start}, {end}): "
                                 "need 0 <= start < end <= length")
        plan = [Copy(store, e, start, stop, (("trimmed_from", [start, stop, length]),)) if e == episode
                else Copy(store, e) for e in range(store.num_episodes)]
        rewrite_in_place(store, plan, show_progress)
    return {"episode": episode, "length": stop - start, "was": length}


def merge(a: str, b: str, out: str, show_progress: bool = False) -> dict:
    """Write the active episodes of store A, then those of store B, into a new store OUT."""
    sa, sb = EpisodeStore.open(a), EpisodeStore.open(b)
    differences = schema_differences(sa, sb)
    if differences:
        raise TeleworldError(f"cannot merge {a} and {b}: {'; '.join(differences)}")
    if not is_url(out) and Path(out).exists():
        raise TeleworldError(f"{out} already exists; merge writes a new store")
    plan = [Copy(s, int(e), note=(("source", f"{s.path}#{int(e)}"),)) for s in (sa, sb) for e in s.active_episodes()]
    with EpisodeStore.create(out, sa.info, chunk_bytes=_chunk_bytes(sa)) as dst:
        copy_episodes(plan, dst, show_progress)
    return {"episodes": len(plan), "from_a": len(sa.active_episodes()), "from_b": len(sb.active_episodes())}


def schema_differences(a: EpisodeStore, b: EpisodeStore) -> list[str]:
    """Human-readable list of what makes two stores' arrays mean different things."""
    out = []
    va, vb = a.info.get("schema_version", "0.0"), b.info.get("schema_version", "0.0")
    if parse_version(va)[0] != parse_version(vb)[0]:
        out.append(f"schema_version differs ({va} vs {vb})")
    for key in SCHEMA_INFO_KEYS:
        x, y = a.info.get(key), b.info.get(key)
        if x != y:
            out.append(f"{key} differs" if key == "mjcf" else f"{key} differs ({x!r} vs {y!r})")
    return out


def copy_episodes(plan: list[Copy], dst: EpisodeStore, show_progress: bool = False) -> None:
    """Append each planned episode (or part of one) to ``dst``, one bulk write per array per episode."""
    with progress_bar(show_progress) as bar:
        task = bar.add_task("copy", total=len(plan), status="", unit="episodes")
        for item in plan:
            src = item.source
            steps = src.episode(item.episode)
            offsets, rows = src.episode_contacts(item.episode)
            first, last, _ = slice(item.first, item.last).indices(len(steps["action"]))
            steps = {k: v[first:last] for k, v in steps.items()}
            rows = {k: v[offsets[first] : offsets[last]] for k, v in rows.items()}
            info = {**src.episode_info(item.episode), **dict(item.note)}
            dst.write_episode(steps, rows, info)
            bar.update(task, advance=1, status=f"episode {item.episode}")


def rewrite_in_place(store: EpisodeStore, plan: list[Copy], show_progress: bool = False) -> None:
    """Copy ``plan`` into a sibling store, carry over edits, then swap it in place of ``store`` (held locked)."""
    if is_url(store.path):
        raise TeleworldError("rewriting works on local stores only; copy the store locally first")
    path = Path(store.path)
    tmp, old = path.with_name(path.name + ".rewrite"), path.with_name(path.name + ".old")
    for leftover in (tmp, old):
        if leftover.exists():
            raise TeleworldError(f"{leftover} exists (left by an interrupted rewrite); remove it first")
    new_index = {item.episode: i for i, item in enumerate(plan)}
    edits = store.edits
    split = edits["split"] and {**edits["split"], **{k: [new_index[e] for e in edits["split"][k] if e in new_index]
                                                      for k in ("train", "val")}}
    try:
        with EpisodeStore.create(tmp, store.info, chunk_bytes=_chunk_bytes(store)) as dst:
            copy_episodes(plan, dst, show_progress)
            dst.set_edits(deleted=[new_index[e] for e in edits["deleted"] if e in new_index], split=split)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    path.rename(old)
    tmp.rename(path)
    store.close()
    shutil.rmtree(old)


def _chunk_bytes(store: EpisodeStore) -> int:
    """The chunk byte target a store was made with (from its image or action chunking)."""
    key = "action" if not store.info["cameras"] else f"image_{store.info['cameras'][0]}"
    spec = store.specs[key]
    return int(store.block(f"data/{key}") * np.prod(spec.shape) * np.dtype(spec.dtype).itemsize)

