"""delete (mark, undo, compact), trim, split and merge on real stores."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recorder import EpisodeStore
from recorder.cli import data_app
from recorder.edit import compact, mark_deleted, merge, restore, store_split, trim
from recorder.health import validate


@pytest.fixture
def store_copy(tmp_path, push_store):
    path = tmp_path / "copy.zarr"
    shutil.copytree(push_store, path)
    return str(path)


def _same(a: EpisodeStore, i: int, b: EpisodeStore, j: int, first: int = 0, last: int | None = None) -> None:
    ea, eb = a.episode(i), b.episode(j)
    for key in ea:
        assert np.array_equal(ea[key], eb[key][first:last]), key
    oa, ra = a.episode_contacts(i)
    ob, rb = b.episode_contacts(j)
    for key in ra:
        assert np.array_equal(ra[key], rb[key][ob[first] : ob[last if last is not None else len(ob) - 1]]), key


def test_delete_marks_then_compacts(store_copy, push_store):
    with EpisodeStore.open(store_copy, mode="a") as store:
        assert mark_deleted(store, [4, 1]) == [1, 4]
        assert store.active_episodes().tolist() == [0, 2, 3, 5]
        assert store.num_episodes == 6  # non-destructive: the data is still there
        assert restore(store, [4]) == [1]
        store_split(store, 0.34, seed=3)
        split = store.edits["split"]
    assert compact(store_copy) == {"kept": 5, "removed": 1}
    original, compacted = EpisodeStore.open(push_store), EpisodeStore.open(store_copy)
    assert compacted.num_episodes == 5 and compacted.edits["deleted"] == []
    for new, old in enumerate([0, 2, 3, 4, 5]):
        _same(compacted, new, original, old)
        assert compacted.episode_info(new)["seed"] == old
    renumber = {0: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    assert compacted.edits["split"]["val"] == [renumber[e] for e in split["val"] if e != 1]
    assert validate(compacted).ok
    assert sorted(p.name for p in Path(store_copy).parent.iterdir()) == ["copy.zarr"]  # no .old / .rewrite left


def test_delete_cli_with_compact(store_copy):
    result = CliRunner().invoke(data_app, ["delete", store_copy, "0", "5", "--compact"])
    assert result.exit_code == 0, result.output
    assert EpisodeStore.open(store_copy).num_episodes == 4


def test_trim_keeps_a_step_range_of_one_episode(store_copy, push_store):
    assert trim(store_copy, 2, 5, -3) == {"episode": 2, "length": 22, "was": 30}
    original, trimmed = EpisodeStore.open(push_store), EpisodeStore.open(store_copy)
    assert trimmed.episode_ends.tolist() == [30, 60, 82, 112, 142, 172]
    _same(trimmed, 2, original, 2, 5, 27)
    _same(trimmed, 3, original, 3)
    assert trimmed.episode_info(2)["trimmed_from"] == [5, 27, 30] and trimmed.episode_info(2)["length"] == 22
    assert validate(trimmed).ok


def test_split_is_stored_seeded_and_skips_deleted(store_copy):
    with EpisodeStore.open(store_copy, mode="a") as store:
        mark_deleted(store, [0])
        split = store_split(store, 0.4, seed=1)
        assert 0 not in split["train"] + split["val"]
        assert sorted(split["train"] + split["val"]) == [1, 2, 3, 4, 5] and len(split["val"]) == 2
        assert store_split(store, 0.4, seed=1) == split
    reopened = EpisodeStore.open(store_copy)
    assert reopened.active_episodes("val").tolist() == split["val"]
    assert reopened.active_episodes("train").tolist() == split["train"]


def test_merge_concatenates_active_episodes(tmp_path, store_copy, push_store):
    with EpisodeStore.open(store_copy, mode="a") as store:
        mark_deleted(store, [1, 2, 3])
    out = str(tmp_path / "merged.zarr")
    assert merge(push_store, store_copy, out) == {"episodes": 9, "from_a": 6, "from_b": 3}
    merged, original = EpisodeStore.open(out), EpisodeStore.open(push_store)
    assert merged.num_episodes == 9
    for new, old in enumerate([0, 1, 2, 3, 4, 5, 0, 4, 5]):
        _same(merged, new, original, old)
    assert merged.episode_info(7)["source"].endswith("copy.zarr#4")
    assert validate(merged).ok
