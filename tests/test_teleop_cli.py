"""`teleworld teleop` as a whole: a recorded session through the command, and one-line errors on bad input."""

import os
import subprocess
import sys
import threading
import time

import pygame

from recorder import EpisodeStore
from teleop.operate import DeviceKind, OnQuit, teleop


def operator(script: list[tuple[float, int]]) -> threading.Thread:
    """Posts key presses (or the window's close button, pygame.QUIT) from another thread once the window is up."""

    def run() -> None:
        while pygame.display.get_surface() is None:
            time.sleep(0.05)
        for delay, key in script:
            time.sleep(delay)
            if key == pygame.QUIT:
                pygame.event.post(pygame.event.Event(pygame.QUIT))
            else:
                pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
                pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_teleop_command_records_saves_and_asks_on_close(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    # record + save, record again, close the window, answer "save"
    script = [(0.3, pygame.K_r), (0.6, pygame.K_r), (0.2, pygame.K_r), (0.6, pygame.QUIT), (0.3, pygame.K_RETURN)]
    thread = operator(script)
    teleop(out=out, scene="push", device=DeviceKind.keyboard, bindings=None, rate=50.0, image_size=32, view=128,
           seed=0, append=False, on_quit=OnQuit.ask, replay_from=None, episode=0)
    thread.join(timeout=5)
    store = EpisodeStore.open(out)
    assert store.num_episodes == 2 and store.uncommitted_steps() == 0
    assert all(store.episode_info(i)["length"] > 5 for i in range(2))
    assert "saved 2 episodes this session" in capsys.readouterr().err


def test_teleop_command_bad_input_is_one_error_line(tmp_path):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy", "MUJOCO_GL": "egl"}
    bad = tmp_path / "bad.toml"
    bad.write_text("[keyboard.axes]\nnope = ['a', 'b']\n")
    cases = [
        (["--scene", "nope"], "unknown scene 'nope'"),
        (["--bindings", str(bad)], "unknown action of scene 'push' 'nope'"),
        (["--device", "gamepad"], "no gamepad found"),
        (["--rate", "500"], "control rate must be in (0, 100] Hz"),
    ]
    for i, (args, fragment) in enumerate(cases):
        result = subprocess.run([sys.executable, "-m", "teleworld", "teleop", "--out", str(tmp_path / f"{i}.zarr"),
                                 *args], capture_output=True, text=True, env=env, timeout=120)
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        assert result.returncode == 1 and len(lines) == 1 and fragment in lines[0], result.stderr
        assert not (tmp_path / f"{i}.zarr").exists()  # nothing half-made is left behind
