"""The windowed commands as a person at a desk meets them: a real X server (Xvfb), SDL's real x11 video driver,
the product's own GL choice (no SDL_VIDEODRIVER=dummy, no MUJOCO_GL override) and real key events (xdotool)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import record
from recorder import EpisodeStore

TOOLS = ("Xvfb", "xdotool", "ffmpeg")
DESKTOP_ENV = {k: v for k, v in os.environ.items()
               if k not in ("SDL_VIDEODRIVER", "MUJOCO_GL", "SDL_FRAMEBUFFER_ACCELERATION", "DISPLAY")}


@pytest.fixture(scope="module")
def display():
    """A fresh virtual X server on a free display number."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"no X server can start here: {', '.join(missing)} not installed (make setup installs them)")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def launch(display: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "teleworld", *args], env={**DESKTOP_ENV, "DISPLAY": display},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def xdotool(display: str, *args: str) -> str:
    result = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def window(display: str, app: subprocess.Popen) -> str:
    """Wait for the app's window (X class "teleworld") to be mapped, give it the keyboard focus, return its id."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert app.poll() is None, app.communicate()[1]
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--class", "teleworld"],
                               env={**os.environ, "DISPLAY": display}, capture_output=True, text=True)
        if found.stdout.split():
            wid = found.stdout.split()[0]
            xdotool(display, "windowfocus", "--sync", wid)
            time.sleep(1.0)  # a few frames drawn
            return wid
        time.sleep(0.25)
    pytest.fail("no teleworld window appeared")


def screenshot(display: str, wid: str) -> np.ndarray:
    """The window's pixels as the X server has them: (H, W, 3) uint8."""
    geometry = dict(line.split("=") for line in xdotool(display, "getwindowgeometry", "--shell", wid).split())
    w, h = int(geometry["WIDTH"]), int(geometry["HEIGHT"])
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "x11grab", "-video_size", f"{w}x{h}", "-i",
                          f"{display}+{geometry['X']},{geometry['Y']}", "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    return np.frombuffer(raw.stdout, np.uint8).reshape(h, w, 3)


def finish(app: subprocess.Popen) -> str:
    """Wait for the app to exit by itself; it must exit 0 with no traceback or GL error; returns stderr."""
    _, err = app.communicate(timeout=60)
    assert app.returncode == 0, err
    assert "Traceback" not in err and "EGL" not in err and "Error" not in err, err
    assert "display: SDL x11 window" in err  # the GL pairing in use is named
    return err


def test_teleop_records_the_keys_held_on_a_real_display(display, tmp_path):
    store_path = tmp_path / "desk.zarr"
    app = launch(display, "teleop", "--scene", "push", "--out", str(store_path))
    wid = window(display, app)
    xdotool(display, "key", "r")  # record
    xdotool(display, "keydown", "Right", "keydown", "Up")
    time.sleep(2.0)
    xdotool(display, "keyup", "Right", "keyup", "Up")
    time.sleep(0.5)
    view = screenshot(display, wid)
    xdotool(display, "key", "Escape")  # quit: an episode is open, so the prompt asks
    time.sleep(0.5)
    xdotool(display, "key", "Return")  # save it and quit
    finish(app)

    assert view[:, :512].std() > 10  # the live view shows the scene, not a blank window
    store = EpisodeStore.open(store_path)
    assert store.num_episodes == 1
    action = store.episode(0)["action"]  # (T, 2): pusher_vx, pusher_vy
    assert np.all(action >= 0)  # only right and up were pressed
    both_full = np.all(action == 1.0, axis=1)
    assert both_full.sum() >= 20  # held for 2 s at 20 Hz: full scale on both axes after the 0.25 s ramp
    check = subprocess.run([sys.executable, "-m", "teleworld", "data", "validate", str(store_path)],
                           capture_output=True, text=True, env=DESKTOP_ENV, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_arm_is_driven_in_cartesian_space_on_a_real_display(display, tmp_path):
    """arm: `w` lifts the hand through the IK, `e` closes the gripper; the store holds both and the hand's pose."""
    store_path = tmp_path / "arm.zarr"
    app = launch(display, "teleop", "--scene", "arm", "--out", str(store_path))
    wid = window(display, app)
    xdotool(display, "key", "r")
    xdotool(display, "keydown", "w", "keydown", "e")
    time.sleep(1.5)
    xdotool(display, "keyup", "w", "keyup", "e")
    time.sleep(0.3)
    view = screenshot(display, wid)
    xdotool(display, "key", "Escape")
    time.sleep(0.5)
    xdotool(display, "key", "Return")
    finish(app)

    assert view.std() > 10
    episode = EpisodeStore.open(store_path).episode(0)
    names = ["ee_vx", "ee_vy", "ee_vz", "ee_yaw", "gripper"]
    up, grip = episode["action"][:, names.index("ee_vz")], episode["action"][:, names.index("gripper")]
    assert (up == 1.0).sum() >= 10 and (grip == 1.0).sum() >= 10 and np.all(episode["action"][:, :2] == 0)
    z = episode["ee_pose"][:, 2]  # the pinch site's height, m
    assert z[-1] - z[0] > 0.05  # at least 1 s at full scale, 0.2 m/s


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained model and the store it trained on."""
    root = tmp_path_factory.mktemp("desk_run")
    store = record(root / "push.zarr", episodes=4, steps=24)
    result = subprocess.run([sys.executable, "-m", "teleworld", "train", "--data", store, "--out", str(root / "run"),
                             "--config", "tiny", "--steps", "2", "--device", "cpu"],
                            capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl"}, timeout=600)
    assert result.returncode == 0, result.stderr
    return root / "run", Path(store)


@pytest.mark.parametrize("command, key, quit_key", [("view", "Right", "q"), ("dream", "Right", "Escape")])
def test_view_and_dream_open_draw_and_quit_on_a_real_display(display, tiny_run, command, key, quit_key):
    run, store = tiny_run
    args = ("view", "--model", str(run), "--data", str(store)) if command == "view" else ("dream", "--model", str(run))
    app = launch(display, *args)
    wid = window(display, app)
    xdotool(display, "keydown", key)
    time.sleep(0.5)
    xdotool(display, "keyup", key)
    shot = screenshot(display, wid)
    xdotool(display, "key", quit_key)
    finish(app)
    tiles = shot[30:200, 8:200]  # the first image panel (real frame, scale 4 of 64 px)
    assert tiles.std() > 10 and len(np.unique(tiles.reshape(-1, 3), axis=0)) > 20


def test_dream_plan_with_a_frames_state_model_on_a_real_display(display, tiny_run, tmp_path):
    """A state model that reads frames plans live: the window shows the real scene and the scene drawn in the
    state the model imagines at the end of its plan; escape quits."""
    _, store = tiny_run
    result = subprocess.run([sys.executable, "-m", "teleworld", "train", "--config", "state", "--data", str(store),
                             "--out", str(tmp_path / "run"), "--steps", "5", "--set", "observe=frames"],
                            capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl"}, timeout=600)
    assert result.returncode == 0, result.stderr
    app = launch(display, "dream", "--model", str(tmp_path / "run"), "--plan", "--candidates", "16", "--horizon",
                 "4", "--iterations", "1")
    wid = window(display, app)
    time.sleep(1.0)
    shot = screenshot(display, wid)
    xdotool(display, "key", "Escape")
    finish(app)
    real, imagined = shot[30:200, 8:200], shot[30:200, 280:470]  # the first two panels (scale 4 of 64 px)
    for panel in (real, imagined):
        assert panel.std() > 10 and len(np.unique(panel.reshape(-1, 3), axis=0)) > 20
