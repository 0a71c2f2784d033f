"""The training loader: windows inside one episode, RAM and chunk modes agree, splits, deletions, URLs, workers."""

import shutil
from itertools import islice

import numpy as np
import pytest

from recorder import EpisodeStore
from recorder.edit import mark_deleted, store_split
from recorder.loader import WindowLoader
from teleworld.errors import TeleworldError
from recorder.windows import make_windows


def test_windows_stay_inside_episodes_and_match_the_trainer(push_store):
    loader = WindowLoader(push_store, length=8, batch_size=32, seed=0)
    assert loader.cached  # 180 small steps fit in RAM
    ends = EpisodeStore.open(push_store).episode_ends
    assert np.array_equal(loader.windows, make_windows(ends, 8))
    batch = loader.sample()
    sim_time = batch["sim_time"]
    assert sim_time.shape == (32, 8)
    assert (np.diff(sim_time, axis=1) > 0).all()  # sim time restarts at each episode: no window crosses one


def test_ram_and_chunk_reads_give_the_same_windows(push_store):
    ram = WindowLoader(push_store, 10, 16, cache="ram", keys=["image_overhead", "action"])
    chunks = WindowLoader(push_store, 10, 16, cache="chunks", keys=["image_overhead", "action"])
    auto_small = WindowLoader(push_store, 10, 16, max_cache_bytes=1000, keys=["action"])
    assert ram.cached and not chunks.cached and not auto_small.cached
    starts = np.array([0, 20, 35, 150, 170, 95])
    a, b = ram.gather(starts), chunks.gather(starts)
    store = EpisodeStore.open(push_store)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
        assert np.array_equal(a[key][2], store.array(key)[35:45]), key
    assert a["image_overhead"].shape == (6, 10, 64, 64, 3)


def test_split_and_deletion_marks_are_honoured(tmp_path, push_store):
    path = tmp_path / "s.zarr"
    shutil.copytree(push_store, path)
    with EpisodeStore.open(path, mode="a") as store:
        mark_deleted(store, [0])
        split = store_split(store, 0.4, seed=0)
    ends = EpisodeStore.open(path).episode_ends
    for name in ("train", "val"):
        loader = WindowLoader(path, 5, 4, split=name)
        episode_of = np.searchsorted(ends, loader.windows, side="right")
        assert sorted(set(episode_of.tolist())) == split[name]
    with pytest.raises(TeleworldError, match="no window of 31 steps"):
        WindowLoader(path, 31, 4)


def test_fsspec_url_and_worker_processes(push_store):
    url = "file://" + str(push_store)
    local = WindowLoader(push_store, 6, 4, cache="chunks", keys=["action", "qpos"], seed=5)
    remote = WindowLoader(url, 6, 4, cache="chunks", keys=["action", "qpos"], seed=5)
    starts = local.windows[[0, 7, 33]]
    assert np.array_equal(local.gather(starts)["qpos"], remote.gather(starts)["qpos"])
    parallel = WindowLoader(url, 6, 4, workers=2, cache="chunks", keys=["action", "qpos"], seed=5)
    batches = list(islice(iter(parallel), 5))
    assert len(batches) == 5 and all(b["action"].shape == (4, 6, 2) for b in batches)
    assert not np.array_equal(batches[0]["qpos"], batches[1]["qpos"])  # workers draw different windows
    valid = {tuple(np.round(local.gather([s])["qpos"][0, 0], 12)) for s in local.windows}
    assert all(tuple(np.round(w[0], 12)) in valid for b in batches for w in b["qpos"])


def test_bad_loader_options(push_store):
    with pytest.raises(TeleworldError, match="cache must be one of"):
        WindowLoader(push_store, 4, 4, cache="disk")
    with pytest.raises(TeleworldError, match="no array data/depth"):
        WindowLoader(push_store, 4, 4, keys=["depth"])
    with pytest.raises(TeleworldError, match="no stored split"):
        WindowLoader(push_store, 4, 4, split="val")
