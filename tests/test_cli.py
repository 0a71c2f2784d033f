"""The CLI end to end on a tiny run, and its one-line errors on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import torch
import zarr

ENV = {**os.environ, "MUJOCO_GL": "egl"}


def teleworld(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "teleworld", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)


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
    assert " ".join(metrics["action_sensitivity"]["verdict"].split()) in " ".join(result.stdout.split())


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
