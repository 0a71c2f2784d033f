"""Each kind of bad input gives one clear TeleworldError and leaves the store exactly as it was."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from conftest import record
from recorder import EpisodeStore
from recorder.cli import data_app
from recorder.edit import mark_deleted, merge, trim
from recorder.export import export_diffusion_policy
from recorder.health import validate
from teleworld.errors import TeleworldError


def snapshot(path: Path) -> dict[str, str]:
    """Content hash of every file of a store (the writer lock aside)."""
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".teleworld.lock"}


@pytest.fixture
def store_copy(tmp_path, push_store) -> Path:
    path = tmp_path / "copy.zarr"
    shutil.copytree(push_store, path)
    return path


def cli_error(*args: str) -> str:
    """Run `teleworld data ...` and return the message of the TeleworldError it raised."""
    result = CliRunner().invoke(data_app, list(args))
    assert isinstance(result.exception, TeleworldError), result.output
    return str(result.exception)


def test_truncated_chunk_file(store_copy, tmp_path):
    chunk = sorted(p for p in (store_copy / "data" / "image_overhead" / "c").rglob("*") if p.is_file())[-1]
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    before = snapshot(store_copy)
    report = validate(EpisodeStore.open(store_copy))
    assert not report.ok and "data/image_overhead steps" in report.problems[0]
    assert "cannot be decoded" in cli_error("validate", str(store_copy))
    with pytest.raises(TeleworldError, match="data/image_overhead cannot be read"):
        EpisodeStore.open(store_copy).episode(5)
    with pytest.raises(TeleworldError, match="image_overhead cannot be read"):
        export_diffusion_policy(EpisodeStore.open(store_copy), tmp_path / "dp.zarr")
    assert not (tmp_path / "dp.zarr").exists()
    assert snapshot(store_copy) == before


def test_deleted_array(store_copy):
    shutil.rmtree(store_copy / "data" / "qpos")
    before = snapshot(store_copy)
    assert "damaged: array data/qpos is missing" in cli_error("info", str(store_copy))
    assert "damaged: array data/qpos is missing" in cli_error("repair", str(store_copy))
    assert snapshot(store_copy) == before


def test_wrong_schema_version(store_copy):
    meta_path = store_copy / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["teleworld"]["schema_version"] = "7.2"
    meta_path.write_text(json.dumps(meta))
    before = snapshot(store_copy)
    assert "schema 7.2, newer than this teleworld reads" in cli_error("validate", str(store_copy))
    assert "schema 7.2" in cli_error("delete", str(store_copy), "0")
    assert snapshot(store_copy) == before


def test_foreign_zarr_store(tmp_path):
    path = tmp_path / "foreign.zarr"
    zarr.open_group(path, mode="w").create_array("x", shape=(3,), dtype="int8")
    before = snapshot(path)
    assert "not a teleworld dataset" in cli_error("validate", str(path))
    assert "not a teleworld dataset" in cli_error("repair", str(path))
    assert snapshot(path) == before


def test_nan_actions_are_found_by_validate(store_copy):
    with EpisodeStore.open(store_copy, mode="a") as store:
        store.arr("data/action")[40] = [np.nan, 0.0]  # as a foreign or buggy writer would leave it
    before = snapshot(store_copy)
    message = cli_error("validate", str(store_copy))
    assert "data/action is not finite at step 40 (episode 1)" in message
    assert snapshot(store_copy) == before


def test_merge_of_mismatched_schemas(tmp_path, push_store):
    small = record(tmp_path / "small.zarr", episodes=1, steps=4, image_size=32)
    before_a, before_b = snapshot(Path(push_store)), snapshot(Path(small))
    with pytest.raises(TeleworldError, match=r"cannot merge .*image_size differs \(\[64, 64\] vs \[32, 32\]\)"):
        merge(push_store, small, str(tmp_path / "out.zarr"))
    assert not (tmp_path / "out.zarr").exists()
    assert snapshot(Path(push_store)) == before_a and snapshot(Path(small)) == before_b


def test_delete_or_trim_of_a_missing_episode(store_copy):
    before = snapshot(store_copy)
    with EpisodeStore.open(store_copy, mode="a") as store:
        with pytest.raises(TeleworldError, match="episode 99 does not exist; .* has 6 episodes"):
            mark_deleted(store, [2, 99])
    assert "episode 6 does not exist" in cli_error("delete", str(store_copy), "6", "--compact")
    with pytest.raises(TeleworldError, match="episode 7 does not exist"):
        trim(str(store_copy), 7, 0, 5)
    with pytest.raises(TeleworldError, match=r"cannot trim episode 1 of 30 steps to \[20, 10\)"):
        trim(str(store_copy), 1, 20, 10)
    assert snapshot(store_copy) == before


def test_second_writer_is_refused_by_every_editing_command(store_copy):
    with EpisodeStore.open(store_copy, mode="a"):
        before = snapshot(store_copy)
        for args in (["repair"], ["delete", "0"], ["split"], ["trim", "0", "--start", "2"]):
            assert "one writer at a time" in cli_error(args[0], str(store_copy), *args[1:])
        assert snapshot(store_copy) == before


def test_the_command_prints_one_error_line(store_copy):
    chunk = sorted(p for p in (store_copy / "data" / "qpos" / "c").rglob("*") if p.is_file())[0]
    chunk.write_bytes(b"\0\1\2")
    result = subprocess.run([sys.executable, "-m", "teleworld", "data", "validate", str(store_copy)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data/qpos steps 0-159 cannot be decoded" in errors[0]
    assert "Traceback" not in result.stderr
