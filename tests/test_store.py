import json

import numpy as np
import pytest
import zarr

from recorder import SCHEMA_VERSION, EpisodeStore, EpisodeWriter
from teleop.loop import step_record
from teleop.scenes import load
from teleworld.errors import TeleworldError


def _record_in_memory(scene, seed, steps):
    """Run the scene and return what the writer is given, to compare with what is read back."""
    obs = scene.reset(seed)
    rng = np.random.default_rng(seed)
    records = []
    for t in range(steps):
        action = scene.action_spec.clip(rng.uniform(-1, 1, 2))
        records.append(step_record(obs, action, wall_time=float(t)))
        obs = scene.step(action)
    return records


def test_roundtrip_of_every_array_contacts_and_boundaries(tmp_path):
    scene = load("push")
    episodes = [_record_in_memory(scene, seed, steps) for seed, steps in [(0, 7), (1, 40), (2, 3)]]
    with EpisodeStore.create(tmp_path / "s.zarr", scene.info(), chunk_bytes=64 * 1024) as store:
        writer = EpisodeWriter(store)
        for seed, records in enumerate(episodes):
            writer.begin(seed=seed)
            for step, contacts in records:
                writer.add(step, contacts)
            writer.end(success=True)
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.episode_ends.tolist() == [7, 47, 50]
    for i, records in enumerate(episodes):
        ep = store.episode(i)
        for key in ep:
            expected = np.stack([np.asarray(step[key]) for step, _ in records]).astype(ep[key].dtype)
            assert np.array_equal(ep[key], expected), key
        offsets, rows = store.episode_contacts(i)
        for t, (_, contacts) in enumerate(records):
            for key, value in contacts.items():
                assert np.array_equal(rows[key][offsets[t] : offsets[t + 1]], value), (i, t, key)
        assert store.episode_info(i)["seed"] == i and store.episode_info(i)["length"] == len(records)
    assert store.info["scene"] == "push" and store.info["schema_version"] == SCHEMA_VERSION


def test_open_episode_is_not_visible_and_is_dropped_on_reopen(tmp_path):
    scene = load("push")
    store = EpisodeStore.create(tmp_path / "s.zarr", scene.info(), chunk_bytes=12288 * 4)
    writer = EpisodeWriter(store)
    for seed in range(2):
        writer.begin(seed=seed)
        for step, contacts in _record_in_memory(scene, seed, 10):
            writer.add(step, contacts)
        if seed == 0:
            writer.end()
    # episode 1 is open; 8 of its 10 steps were flushed as whole blocks of 4
    assert store.uncommitted_steps() == 8
    reader = EpisodeStore.open(tmp_path / "s.zarr")
    assert reader.num_episodes == 1 and reader.num_steps == 10
    store.close()  # simulate the writer going away without ending the episode
    again = EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    EpisodeWriter(again)  # a new writer cuts the uncommitted tail
    assert again.uncommitted_steps() == 0 and again.num_episodes == 1


def test_discard_removes_flushed_steps(tmp_path):
    scene = load("push")
    with EpisodeStore.create(tmp_path / "s.zarr", scene.info(), chunk_bytes=12288 * 2) as store:
        writer = EpisodeWriter(store)
        writer.begin(seed=0)
        for step, contacts in _record_in_memory(scene, 0, 9):
            writer.add(step, contacts)
        writer.discard()
        assert store.num_episodes == 0 and store.uncommitted_steps() == 0


def test_non_finite_action_is_refused(tmp_path):
    scene = load("push")
    with EpisodeStore.create(tmp_path / "s.zarr", scene.info()) as store:
        writer = EpisodeWriter(store)
        writer.begin(seed=0)
        step, contacts = _record_in_memory(scene, 0, 1)[0]
        step["action"] = np.array([np.nan, 0.0], np.float32)
        with pytest.raises(TeleworldError, match="non-finite action"):
            writer.add(step, contacts)


def test_second_writer_is_refused(tmp_path, push_store):
    scene = load("push")
    with EpisodeStore.create(tmp_path / "s.zarr", scene.info()):
        with pytest.raises(TeleworldError, match="one writer at a time"):
            EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    EpisodeStore.open(tmp_path / "s.zarr", mode="a").close()  # released on close


def test_bad_stores_are_clear_errors(tmp_path):
    with pytest.raises(TeleworldError, match="no dataset at"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "foreign.zarr", mode="w").create_array("x", shape=(3,), dtype="int8")
    with pytest.raises(TeleworldError, match="not a teleworld dataset"):
        EpisodeStore.open(tmp_path / "foreign.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_text("{not json")
    with pytest.raises(TeleworldError, match="not a readable Zarr store"):
        EpisodeStore.open(tmp_path / "junk")


def test_newer_major_schema_is_refused(tmp_path):
    scene = load("push")
    EpisodeStore.create(tmp_path / "s.zarr", scene.info()).close()
    meta_path = tmp_path / "s.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["teleworld"]["schema_version"] = "2.0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TeleworldError, match="newer than this teleworld reads"):
        EpisodeStore.open(tmp_path / "s.zarr")


def test_missing_episode_is_a_clear_error(push_store):
    with pytest.raises(TeleworldError, match="episode 99 does not exist"):
        EpisodeStore.open(push_store).episode(99)


def test_appending_after_reopen_continues_open_chunks_and_commits_cheaply(tmp_path):
    """Small arrays are written as whole chunk files from the rows the writer holds; a reopened store reads the
    open chunk back once, so episodes written across sessions, discards and repairs read back exactly."""
    from recorder.health import validate

    scene = load("push")
    episodes = [_record_in_memory(scene, seed, steps) for seed, steps in enumerate([13, 5, 22, 9, 17])]
    path = tmp_path / "s.zarr"
    for session, chosen in enumerate([[0, 1], [2], [3, 4]]):
        store = EpisodeStore.create(path, scene.info(), chunk_bytes=12288 * 16) if session == 0 else \
            EpisodeStore.open(path, mode="a")
        with store:
            writer = EpisodeWriter(store)
            for seed in chosen:
                writer.begin(seed=seed)
                for step, contacts in episodes[seed]:
                    writer.add(step, contacts)
                writer.end()
            if session < 2:  # an episode discarded after a flush leaves nothing behind
                writer.begin(seed=99)
                for step, contacts in episodes[2]:
                    writer.add(step, contacts)
                writer.discard()
    store = EpisodeStore.open(path)
    assert [len(e) for e in episodes] == [13, 5, 22, 9, 17]
    _assert_episodes(store, episodes)
    report = validate(store)
    assert report.ok and not report.notes, (report.problems, report.notes)  # capacity rows are not reported
    raw = store.read("meta/episode_ends")
    assert len(raw) > 5 and (raw[5:] == -1).all()  # ends grow a chunk at a time: most commits resize nothing


def _write(writer, episodes, seeds):
    for seed in seeds:
        writer.begin(seed=seed)
        for step, contacts in episodes[seed]:
            writer.add(step, contacts)
        writer.end()


def _assert_episodes(store, episodes):
    """The store's committed episodes are exactly ``episodes`` (every array, the contacts, the seeds)."""
    assert store.episode_ends.tolist() == np.cumsum([len(e) for e in episodes]).tolist()
    for i, records in enumerate(episodes):
        ep = store.episode(i)
        for key in ep:
            expected = np.stack([np.asarray(step[key]) for step, _ in records]).astype(ep[key].dtype)
            assert np.array_equal(ep[key], expected), (i, key)
        offsets, rows = store.episode_contacts(i)
        for t, (_, contacts) in enumerate(records):
            for key, value in contacts.items():
                assert np.array_equal(rows[key][offsets[t] : offsets[t + 1]], value), (i, t, key)
        assert store.episode_info(i)["seed"] == i


@pytest.fixture(scope="module")
def push_records():
    scene = load("push")
    return scene.info(), [_record_in_memory(scene, seed, steps) for seed, steps in enumerate([13, 22, 30])]


def test_open_blocks_live_in_the_tail_file_until_close(tmp_path, push_records):
    """While a writer has the store, the small arrays' open blocks are in the tail file, not in chunk files; a
    reader overlays them (arrays have capacity past the data), meta's mark counts only chunk-file rows (what a 1.3
    reader sees is a committed prefix); close() moves them into the chunk files and plain zarr reads everything."""
    from recorder.health import validate
    from recorder.schema import TAIL_FILE, WRITTEN_KEY

    info, episodes = push_records
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, info, chunk_bytes=12288 * 16)  # 16-step blocks
    _write(EpisodeWriter(store), episodes, range(3))
    steps = store.num_steps
    assert (path / TAIL_FILE).exists()
    reader = EpisodeStore.open(path)
    assert reader.array("action").shape[0] > steps  # capacity beyond the committed length
    _assert_episodes(reader, episodes)
    report = validate(reader)
    assert report.ok and not report.notes, (report.problems, report.notes)
    plain = zarr.open_group(path, mode="r")
    on_disk = plain["meta"].attrs[WRITTEN_KEY]["steps"]
    assert on_disk < steps  # the open block is not in its chunk file yet
    assert np.array_equal(plain["data/qpos"][:on_disk], reader.read("data/qpos", slice(0, on_disk)))

    store.close()
    assert not (path / TAIL_FILE).exists()
    plain = zarr.open_group(path, mode="r")
    assert plain["meta"].attrs[WRITTEN_KEY]["steps"] == steps
    closed = EpisodeStore.open(path)
    _assert_episodes(closed, episodes)
    for key in closed.keys:  # plain zarr reads exactly what EpisodeStore reads
        assert np.array_equal(plain[f"data/{key}"][:steps], closed.read(f"data/{key}", slice(0, steps))), key
    assert validate(closed).ok and not validate(closed).notes


@pytest.mark.parametrize("fail_at", [1, 3, 6, 10, 12, 14, 18, 22, 24, 30])
def test_a_write_failing_mid_flush_leaves_committed_episodes_intact(tmp_path, monkeypatch, push_records, fail_at):
    """The n-th file write of an episode's last flush fails: the store as a crash there leaves it, and as the
    writer's close leaves it, reads back exactly the committed episodes and validates; a new writer continues it."""
    import shutil

    import recorder.store as store_module
    from recorder.health import validate
    from recorder.store import LOCK_NAME

    info, episodes = push_records
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, info, chunk_bytes=12288 * 16)
    writer = EpisodeWriter(store)
    _write(writer, episodes, [0, 1])
    real, calls = store_module.write_file, [0]

    def failing(where, data) -> None:
        calls[0] += 1
        if calls[0] == fail_at:
            raise OSError("disk full")
        real(where, data)

    monkeypatch.setattr(store_module, "write_file", failing)
    try:
        _write(writer, episodes, [2])
        committed = 3
    except OSError:
        committed = 2
    monkeypatch.undo()
    crashed = tmp_path / "crashed.zarr"  # what a process dying here leaves on disk
    shutil.copytree(path, crashed, ignore=shutil.ignore_patterns(LOCK_NAME))
    store.close()  # closing after the failure moves only what is durable: a failed commit stays uncommitted
    _assert_episodes(EpisodeStore.open(path), episodes[:committed])
    reader = EpisodeStore.open(crashed)
    _assert_episodes(reader, episodes[:committed])
    assert validate(reader).ok, validate(reader).problems

    with EpisodeStore.open(crashed, mode="a") as again:
        _write(EpisodeWriter(again), episodes, range(committed, 3))
    final = EpisodeStore.open(crashed)
    _assert_episodes(final, episodes)
    assert validate(final).ok and not validate(final).notes


def test_a_failing_close_keeps_the_tail_file_and_shows_the_first_error(tmp_path, monkeypatch, push_records):
    """close() moves the tail file into the chunk files; if that fails (a full disk), the tail file stays, the
    committed episodes read back, the lock is released, and an error that ended the ``with`` block is the one shown."""
    import recorder.store as store_module
    from recorder.schema import TAIL_FILE
    from recorder.store import LOCK_NAME

    def failing(where, data) -> None:
        raise OSError(28, "No space left on device")

    info, episodes = push_records
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError, match="the loop failed"):
        with EpisodeStore.create(path, info, chunk_bytes=12288 * 16) as store:
            _write(EpisodeWriter(store), episodes, range(2))
            monkeypatch.setattr(store_module, "write_file", failing)
            raise RuntimeError("the loop failed")
    monkeypatch.undo()
    assert (path / TAIL_FILE).exists() and not (path / LOCK_NAME).exists()
    _assert_episodes(EpisodeStore.open(path), episodes[:2])

    store = EpisodeStore.open(path, mode="a")
    monkeypatch.setattr(store_module, "write_file", failing)
    with pytest.raises(OSError, match="No space left"):
        with store:
            pass
    monkeypatch.undo()
    with EpisodeStore.open(path, mode="a"):
        pass
    assert not (path / TAIL_FILE).exists()
    _assert_episodes(EpisodeStore.open(path), episodes[:2])


def test_frames_are_encoded_while_recording_and_only_for_the_rows_they_were_given(tmp_path, push_records, monkeypatch):
    """EpisodeWriter hands each whole inner chunk of frames to the store's background encoder as it fills, so the
    episode's last flush encodes only the chunks an episode boundary cut; a precoded chunk whose rows differ from
    what is then appended (a rewrite) is encoded again, never stored with the other rows' bytes."""
    import threading

    from recorder.schema import image_key

    info, episodes = push_records
    key = f"data/{image_key(info['cameras'][0])}"
    encoders = []
    original = EpisodeStore._encode_inner

    def encode_inner(self, arr, rows):
        encoders.append(threading.current_thread() is threading.main_thread())
        return original(self, arr, rows)

    monkeypatch.setattr(EpisodeStore, "_encode_inner", encode_inner)
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, info) as store:
        assert store.precode_rows(key) == 16
        _write(EpisodeWriter(store), episodes, range(3))  # rows [0, 13), [13, 35), [35, 65)
        assert encoders.count(False) == 2  # the inner chunks inside one episode: [16, 32) and [48, 64)
        stored = store.next_row(key)
        store.precode(key, 64, np.zeros((16, *store.specs[key[5:]].shape), np.uint8))  # then others go there
        extra = episodes[0][:13] + episodes[1][:3]
        store.write_episode({k: np.stack([np.asarray(s[k]) for s, _ in extra]) for k in store.keys},
                            {k: np.concatenate([np.asarray(c[k]) for _, c in extra]) for k in extra[0][1]},
                            {"seed": 3})
    assert stored == 65
    reader = EpisodeStore.open(path)
    _assert_episodes(reader, [*episodes, extra])  # episode 3's frames, not the zeros precoded at row 64
    plain = zarr.open_group(path, mode="r")
    assert np.array_equal(plain[key][: reader.num_steps], reader.read(key, slice(0, reader.num_steps)))
