"""validate on real recordings: all-zero stretches are valid, a chunk file that went missing is still caught."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recorder import EpisodeStore, EpisodeWriter
from recorder.cli import data_app
from recorder.health import validate
from teleop.loop import step_record
from teleop.scenes import load

BLOCK_BYTES = 12288 * 16  # 16 steps per time block at 64x64: several blocks in a short episode


def record(path: Path, scene_name: str, actions: list[np.ndarray], seed: int = 0, commit: bool = True) -> None:
    """Record one episode applying ``actions`` in a real scene; ``commit=False`` leaves it flushed but open."""
    scene = load(scene_name, image_size=(64, 64))
    with EpisodeStore.create(path, scene.info(), chunk_bytes=BLOCK_BYTES) as store:
        writer = EpisodeWriter(store)
        writer.begin(seed=seed)
        obs = scene.reset(seed)
        for t, action in enumerate(actions):
            action = scene.action_spec.clip(action)
            writer.add(*step_record(obs, action, float(t)))
            obs = scene.step(action)
        writer.end() if commit else writer.flush()
    scene.close()


def zero_blocks(store: EpisodeStore, key: str) -> list[int]:
    """Time blocks of data/<key> that are all zero (the chunks zarr would not write by default)."""
    block, values = store.block(f"data/{key}"), store.read(f"data/{key}", slice(0, store.num_steps))
    return [i for i in range(0, len(values) // block) if not values[i * block : (i + 1) * block].any()]


def check_cli_valid(path: Path) -> None:
    result = CliRunner().invoke(data_app, ["validate", str(path)])
    assert result.exit_code == 0 and "valid" in result.output, (result.output, result.exception)


@pytest.fixture(scope="module")
def gripper_idle(tmp_path_factory) -> Path:
    """A gripper episode whose operator never moves: reward and action are 0 at every step."""
    path = tmp_path_factory.mktemp("idle") / "gripper.zarr"
    record(path, "gripper", [np.zeros(5)] * 40, seed=1)
    return path


def test_episode_with_zero_reward_throughout_validates(gripper_idle):
    store = EpisodeStore.open(gripper_idle)
    assert not store.read("data/reward", slice(0, store.num_steps)).any()
    assert zero_blocks(store, "reward") and zero_blocks(store, "action")
    report = validate(store)
    assert report.ok and not report.notes, report.problems + report.notes
    check_cli_valid(gripper_idle)


def test_zero_action_stretch_longer_than_a_block_validates(tmp_path):
    path = tmp_path / "push.zarr"
    moving = [np.array([0.6, -0.4])] * 20
    record(path, "push", moving + [np.zeros(2)] * 50 + moving)
    store = EpisodeStore.open(path)
    assert zero_blocks(store, "action")  # at least one whole block of waiting
    assert validate(store).ok, validate(store).problems
    check_cli_valid(path)


def test_salvaged_crash_validates(tmp_path, gripper_idle):
    path = tmp_path / "crashed.zarr"
    shutil.copytree(gripper_idle, path)
    scene = load("gripper", image_size=(64, 64))
    with EpisodeStore.open(path, mode="a") as store:  # a second idle episode, flushed, never committed
        writer = EpisodeWriter(store)
        writer.begin(seed=2)
        obs = scene.reset(2)
        for t in range(40):
            writer.add(*step_record(obs, np.zeros(5, np.float32), float(t)))
            obs = scene.step(np.zeros(5, np.float32))
        writer.flush()
    scene.close()
    result = CliRunner().invoke(data_app, ["repair", str(path), "--salvage"])
    assert result.exit_code == 0 and "salvaged 40 steps as partial episode 1" in result.output, result.output
    store = EpisodeStore.open(path)
    assert store.episode_info(1)["partial"] is True
    assert not store.read("data/reward", store.episode_slice(1)).any()
    assert validate(store).ok, validate(store).problems
    check_cli_valid(path)


@pytest.mark.parametrize("name", ["data/action", "data/reward", "data/image_overhead", "contacts/pos"])
def test_a_lost_chunk_file_is_a_problem(tmp_path, name):
    path = tmp_path / "push.zarr"
    record(path, "push", [np.array([0.6, -0.4])] * 50)
    store = EpisodeStore.open(path)
    assert validate(store).ok
    files = sorted((f for f in (path / name / "c").rglob("*") if f.is_file()),
                   key=lambda f: [int(x) for x in f.relative_to(path / name / "c").parts])
    assert len(files) >= 2
    files[1].unlink()  # the second block along time
    report = validate(EpisodeStore.open(path))
    block = store.block(name)
    assert not report.ok and any(p.startswith(f"{name}: 1 chunk file(s) missing, the first for rows {block}-")
                                 for p in report.problems), report.problems
    result = CliRunner().invoke(data_app, ["validate", str(path)])
    assert result.exit_code != 0 and f"{name}: 1 chunk file(s) missing" in str(result.exception)


def test_before_schema_1_2_an_absent_chunk_is_a_note(tmp_path):
    """Stores written before 1.2 skipped all-zero chunks: an absent one cannot be called lost."""
    path = tmp_path / "old.zarr"
    record(path, "push", [np.array([0.6, -0.4])] * 50)
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["teleworld"]["schema_version"] = "1.1"
    meta_path.write_text(json.dumps(meta))
    (path / "data" / "action" / "c" / "1" / "0").unlink()
    report = validate(EpisodeStore.open(path))
    assert report.ok, report.problems
    assert any(n.startswith("data/action: 1 chunk file(s) missing") and "schema 1.1" in n for n in report.notes)
