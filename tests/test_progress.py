"""Progress off a terminal: real commands piped to a file print plain timestamped lines; a terminal gets the bar."""

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "MUJOCO_GL": "egl"}
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<task>.+?) (?P<done>\d+)/(?P<total>\d+) \(\d+%\), (?P<rest>.*)$")


def piped(log: Path, *args: str, interval: str) -> list[re.Match]:
    """Run `teleworld ARGS` with stdout and stderr going to ``log``; its progress lines, parsed."""
    with log.open("w") as f:
        result = subprocess.run([sys.executable, "-m", "teleworld", *args], stdout=f, stderr=subprocess.STDOUT,
                                env={**ENV, "TELEWORLD_PROGRESS_INTERVAL": interval}, timeout=300)
    text = log.read_text()
    assert result.returncode == 0, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    return [m for m in map(LINE.match, text.splitlines()) if m]


def test_train_piped_to_a_file_prints_step_loss_rate_and_eta(tmp_path, push_store):
    lines = piped(tmp_path / "train.log", "train", "--data", push_store, "--out", str(tmp_path / "run"),
                  "--config", "tiny", "--steps", "4", "--device", "cpu", interval="0")
    train = [m for m in lines if m["task"] == "train"]
    assert [int(m["done"]) for m in train] == [0, 1, 2, 3, 4] and {m["total"] for m in train} == {"4"}
    assert train[0]["rest"] == "started"
    for m in train[1:]:
        assert re.search(r"\d[\d.]* steps/s", m["rest"]) and re.search(r"loss \d\S* \(image \d", m["rest"]), m[0]
    assert all("ETA " in m["rest"] for m in train[1:-1]) and "done in " in train[-1]["rest"]


def test_generate_piped_to_a_file_prints_first_and_last_lines_between_intervals(tmp_path):
    lines = piped(tmp_path / "generate.log", "generate", "--out", str(tmp_path / "s.zarr"), "--episodes", "4",
                  "--steps", "12", "--image-size", "32", interval="600")
    assert [(m["task"], m["done"], m["total"]) for m in lines] == [("generate push ×1 (local)", d, "4")
                                                                  for d in ("0", "1", "4")]
    assert re.search(r"episodes/s, ETA \d", lines[1]["rest"]) and re.search(r"episodes/s, done in", lines[2]["rest"])
    assert "4 episodes, 48 steps in" in (tmp_path / "generate.log").read_text()


def test_data_validate_and_export_piped_to_a_file(tmp_path, push_store):
    validate = piped(tmp_path / "validate.log", "data", "validate", push_store, interval="0")
    assert validate[-1]["task"] == "validate" and validate[-1]["done"] == validate[-1]["total"]
    assert "chunks/s, done in" in validate[-1]["rest"]
    export = piped(tmp_path / "export.log", "data", "export", push_store, "--out", str(tmp_path / "dp"),
                   "--format", "diffusion-policy", interval="0")
    assert len(export) > 3 and export[-1]["done"] == export[-1]["total"] and "rows/s" in export[-1]["rest"]
    assert "valid, 6 episodes" in (tmp_path / "validate.log").read_text()


def test_a_terminal_gets_the_rich_bar_and_stdout_only_the_result(tmp_path):
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "teleworld", "generate", "--out", str(tmp_path / "s.zarr"),
                             "--episodes", "2", "--steps", "12", "--image-size", "32"],
                            stdout=subprocess.PIPE, stderr=follower, text=True, env=ENV)
    os.close(follower)
    screen = b""
    while chunk := _read(leader):
        screen += chunk
    stdout, _ = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0, screen
    assert b"\x1b[" in screen and b"2/2" in screen and not LINE.match(screen.decode().splitlines()[0])
    assert stdout.strip().startswith("2 episodes, 24 steps in")


def test_a_bad_interval_is_one_error_line(push_store):
    result = subprocess.run([sys.executable, "-m", "teleworld", "data", "validate", push_store], capture_output=True,
                            text=True, env={**ENV, "TELEWORLD_PROGRESS_INTERVAL": "soon"}, timeout=120)
    assert result.returncode == 1 and result.stderr.strip() == \
        "error: TELEWORLD_PROGRESS_INTERVAL must be a number of seconds (0 or more), got 'soon'"


def _read(fd: int) -> bytes:
    """Bytes from a pty's leader side; b'' once the child closed its side (EIO on Linux)."""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
