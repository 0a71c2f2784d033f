"""The CLI end to end on a tiny run, and its one-line errors on bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import zarr

from recorder import EpisodeStore

ENV = {**os.environ, "MUJOCO_GL": "egl"}


def teleworld(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "teleworld", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)


def installed_teleworld(*args: str, tmp_path: Path, env: dict | None = None) -> tuple[int, str]:
    """The installed `teleworld` script with stdout and stderr written to files; (exit status, stderr)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = {**ENV, "TMPDIR": str(tmp_path), **(env or {})}
    with out.open("w") as stdout, err.open("w") as stderr:
        command = [str(Path(sys.executable).with_name("teleworld")), *args]
        code = subprocess.run(command, stdout=stdout, stderr=stderr, env=env, timeout=600).returncode
    return code, err.read_text()


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_demo_end_to_end_tiny(tmp_path):
    out = tmp_path / "demo"
    result = teleworld("demo", "--out", str(out), "--episodes", "4", "--steps", "24", "--train-steps", "4",
                       "--config", "tiny", "--horizon", "10", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "replay" / "metrics.json").read_text())
    assert metrics["horizon"] == 10 and metrics["context"] == 5
    assert len(metrics["per_step"]["psnr"]["model"]) == 10
    assert len(metrics["per_step"]["psnr"]["copy_last"]) == 10
    assert (out / "run" / "checkpoint.pt").exists()
    assert iio.imread(out / "replay" / "psnr.png").ndim == 3
    frames = sum(1 for _ in iio.imiter(out / "replay" / "rollouts.mp4"))
    assert frames == 15
    for name in ("report.html", "metrics.csv", "ssim.png", "moved_psnr.png", "proprio_rmse.png", "contact_f1.png"):
        assert (out / "replay" / name).stat().st_size > 0, name
    for method in ("shuffled_actions", "reconstruction"):
        assert len(metrics["per_step"]["ssim"][method]) == 10
    assert "This demo takes about" in result.stdout.splitlines()[0]  # said up front
    assert metrics["training"]["steps"] == 4 and metrics["training"]["budget_minutes"] == 6.0
    for baseline in ("copy_last", "median_frame", "shuffled_actions"):
        verdict = metrics["versus_baselines"][baseline]
        low, high = verdict["ci"]
        assert low <= verdict["delta_psnr_db"] <= high and verdict["beats"] == (low > 0)
        assert " ".join(verdict["sentence"].split()) in " ".join(result.stdout.split())
    assert "Training: 4 steps in" in (out / "replay" / "report.html").read_text()


def test_generate_train_replay_commands(tmp_path):
    store = tmp_path / "s.zarr"
    assert teleworld("generate", "--out", str(store), "--episodes", "3", "--steps", "20").returncode == 0
    assert teleworld("generate", "--out", str(store), "--episodes", "1", "--steps", "20", "--seed", "3",
                     "--append").returncode == 0
    info = json.loads(teleworld("data", "info", str(store), "--json").stdout)
    assert info["episodes"] == 4 and info["steps"] == 80 and info["scene"] == "push"
    run = tmp_path / "run"
    trained = teleworld("train", "--data", str(store), "--out", str(run), "--config", "tiny", "--steps", "2",
                        "--device", "cpu", "--set", "steps=5", "--set", "rollout_steps=8")
    assert trained.returncode == 0, trained.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2  # the named option wins over --set
    result = teleworld("replay", "--model", str(run), "--data", str(store), "--out", str(tmp_path / "r"),
                       "--context", "3", "--horizon", "6", "--windows", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["windows"] == 2


def test_bad_input_gives_one_line_errors(tmp_path, push_store):
    assert_one_line_error(teleworld("data", "info", str(tmp_path / "nope.zarr")), "no dataset at")
    zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    assert_one_line_error(teleworld("data", "info", str(tmp_path / "foreign.zarr")), "not a teleworld dataset")
    assert_one_line_error(teleworld("generate", "--scene", "moon", "--out", str(tmp_path / "x.zarr")),
                          "unknown scene 'moon'")
    assert_one_line_error(teleworld("replay", "--model", str(tmp_path), "--data", push_store, "--out",
                                    str(tmp_path / "r")), "no checkpoint at")
    # a model trained on 32x32 frames cannot replay 64x64 data
    small = tmp_path / "small.zarr"
    assert teleworld("generate", "--out", str(small), "--episodes", "2", "--steps", "12",
                     "--image-size", "32").returncode == 0
    run = tmp_path / "run32"
    assert teleworld("train", "--data", str(small), "--out", str(run), "--config", "tiny", "--steps", "1").returncode == 0
    assert_one_line_error(teleworld("replay", "--model", str(run), "--data", push_store, "--out", str(tmp_path / "r")),
                          "image_size=32 but the data has image_size=64")
    assert_one_line_error(teleworld("replay", "--model", str(run), "--data", str(small), "--out", str(tmp_path / "r")),
                          "needs")
    assert Path(push_store).exists()


def test_usage_errors_print_typer_s_usage_and_exit_2(tmp_path):
    code, stderr = installed_teleworld("teleop", "--bogus", tmp_path=tmp_path)
    assert code == 2 and "Traceback" not in stderr, stderr
    assert "Usage: teleworld teleop [OPTIONS]" in stderr and "No such option: --bogus" in stderr
    code, stderr = installed_teleworld("train", "--data", str(tmp_path), tmp_path=tmp_path)
    assert code == 2 and "Missing option '--out'" in stderr and "Traceback" not in stderr, stderr


def test_known_bad_input_is_one_line_and_debug_shows_where_it_came_from(tmp_path):
    code, stderr = installed_teleworld("data", "info", str(tmp_path / "nope.zarr"), tmp_path=tmp_path)
    assert code == 1 and stderr == f"error: no dataset at {tmp_path / 'nope.zarr'}\n"
    code, stderr = installed_teleworld("--debug", "data", "info", str(tmp_path / "nope.zarr"), tmp_path=tmp_path)
    assert code == 1 and "Traceback (most recent call last)" in stderr and "recorder/store.py" in stderr
    assert stderr.splitlines()[-1] == f"error: no dataset at {tmp_path / 'nope.zarr'}"


def test_random_bytes_as_a_checkpoint_is_one_line(tmp_path, push_store):
    model = tmp_path / "random.pt"
    model.write_bytes(np.random.default_rng(17).bytes(1000))  # torch's unpickler fails with IndexError on these
    result = teleworld("replay", "--model", str(model), "--data", push_store, "--out", str(tmp_path / "r"))
    assert_one_line_error(result, f"{model} is not a loadable teleworld checkpoint (torch.load failed: IndexError)")


def test_unexpected_errors_are_one_line_naming_the_saved_traceback(tmp_path, push_store):
    store = tmp_path / "corrupt.zarr"
    shutil.copytree(push_store, store)
    chunks = sorted(p for p in (store / "data" / "action").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunks[0].write_bytes(np.random.default_rng(0).bytes(64))  # a chunk that no longer decodes: nothing expects it
    args = ("train", "--data", str(store), "--out", str(tmp_path / "run"), "--config", "tiny", "--device", "cpu")
    code, stderr = installed_teleworld(*args, tmp_path=tmp_path)
    assert code == 1 and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unexpected RuntimeError: "), stderr
    saved = lines[0].partition("full traceback in ")[2].removesuffix(" (or rerun with --debug)")
    assert Path(saved).parent == tmp_path and "Traceback (most recent call last)" in Path(saved).read_text()
    code, stderr = installed_teleworld(*args, tmp_path=tmp_path, env={"TELEWORLD_DEBUG": "1"})
    assert code == 1 and stderr.startswith("Traceback (most recent call last)"), stderr
    assert stderr.splitlines()[-1].startswith("error: unexpected RuntimeError: ")
    assert stderr.splitlines()[-1].endswith("; traceback above")


@pytest.fixture()
def small_disk(tmp_path):
    """A real 400 KiB file system (tmpfs) to fill up; needs the right to mount, skipped without it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small file system")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_disk_filling_during_generate_keeps_committed_episodes_and_says_how_to_resume(small_disk, tmp_path):
    store = small_disk / "s.zarr"
    args = ("generate", "--out", str(store), "--episodes", "30", "--steps", "20")
    code, stderr = installed_teleworld(*args, tmp_path=tmp_path)
    committed = EpisodeStore.open(store).num_episodes
    assert code == 1 and "Traceback" not in stderr and 0 < committed < 30, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]  # progress lines share stderr
    assert errors == [stderr.strip().splitlines()[-1]] == [
        f"error: {store}: no space left on device while writing; its {committed} committed episodes are safe. "
        "Free space, then rerun with --resume --episodes 30 to top the store up"]
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)  # space freed
    assert installed_teleworld(*args, "--resume", tmp_path=tmp_path)[0] == 0
    fresh = tmp_path / "fresh.zarr"
    assert installed_teleworld("generate", "--out", str(fresh), "--episodes", "30", "--steps", "20",
                               tmp_path=tmp_path)[0] == 0
    resumed, uninterrupted = EpisodeStore.open(store), EpisodeStore.open(fresh)
    assert resumed.num_episodes == 30 and teleworld("data", "validate", str(store)).returncode == 0
    for key in resumed.keys:
        if key != "wall_time":  # every episode, those committed before the disk filled too, as if never stopped
            assert np.array_equal(resumed.read(f"data/{key}"), uninterrupted.read(f"data/{key}")), key
