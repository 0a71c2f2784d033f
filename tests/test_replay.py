"""Replay end to end on tiny real models: baselines on the model's windows, the action verdict, the HTML report in
headless Chromium, the viewer and dream loops driven by posted pygame events, and one-line errors on bad input."""

import csv
import json
import os
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pygame
import pytest
import torch

from browser import CHROMIUM, screenshot
from recorder import EpisodeStore
from replay.dream import dream_loop, open_dream
from replay.evaluate import evaluate
from replay.metrics import psnr
from replay.scores import METRICS
from replay.screen import LINE, PAD, init_display, panels_size
from replay.view import Viewer, view_loop
from teleop.bindings import default_bindings
from teleop.devices.keyboard import KeyboardDevice
from teleop.devices.scripted import scripted_operator
from teleop.loop import collect
from teleop.scenes import load
from train.checkpoint import load_model, save_checkpoint
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train

K, H = 3, 8


def teleworld(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "teleworld", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MUJOCO_GL": "egl"})


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def make_store(path, scene_name: str = "push", episodes: int = 2, steps: int = 12) -> str:
    """A real store recorded from the push scene, optionally labelled as another scene."""
    scene = load("push")
    info = {**scene.info(), "scene": scene_name}
    with EpisodeStore.create(path, info) as store:
        collect(scene, scripted_operator(scene), store, episodes, steps)
    scene.close()
    return str(path)


def fit(store_path, out_dir) -> str:
    store = EpisodeStore.open(store_path)
    data = EpisodeArrays(store, DataSpec.from_store(store))
    return train(data, make_config("tiny", steps=3), out_dir, show_progress=False)["checkpoint"]


@pytest.fixture(scope="module")
def run(push_store, tmp_path_factory) -> str:
    """A tiny model trained for a few steps on the push fixture (its actions do change its predictions)."""
    return fit(push_store, tmp_path_factory.mktemp("run"))


def test_replay_scores_a_scene_without_contact_groups(tmp_path):
    """reacher-hard declares no contact groups: replay scores images, proprio and positions and no contact metric
    (it crashed on the empty contact arrays before)."""
    scene = load("reacher-hard")
    assert not scene.info()["contact_groups"]
    with EpisodeStore.create(tmp_path / "reacher.zarr", scene.info()) as store:
        collect(scene, scripted_operator(scene), store, 3, 16)
    scene.close()
    run = fit(tmp_path / "reacher.zarr", tmp_path / "run")
    metrics = evaluate(run, tmp_path / "reacher.zarr", tmp_path / "replay", context=K, horizon=H, windows=3, seed=0,
                       episodes="all", show_progress=False)
    assert len(metrics["per_step"]["psnr"]["model"]) == H
    assert not any(metrics["per_step"].get(name) for name in ("contact_f1", "contact_onset_f1"))
    assert metrics["position_error"]["bodies"]
    assert (tmp_path / "replay" / "report.html").exists()


@pytest.fixture(scope="module")
def deaf_run(run, tmp_path_factory) -> str:
    """The same model with the action columns of its recurrent input layer zeroed: it cannot hear actions."""
    model, spec, ckpt = load_model(run)
    with torch.no_grad():
        model.rssm.inp[0].weight[:, model.cfg.stoch:] = 0.0
    path = tmp_path_factory.mktemp("deaf") / "checkpoint.pt"
    return str(save_checkpoint(path, model, spec, ckpt["step"], {"val_episodes": ckpt["val_episodes"]}))


@pytest.fixture(scope="module")
def report(run, push_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    return evaluate(run, push_store, out, context=K, horizon=H, windows=5, seed=3, simulator=True,
                    show_progress=False), out


def test_report_files_and_baselines_on_the_models_windows(report, run, push_store):
    metrics, out = report
    ckpt = torch.load(os.path.join(os.path.dirname(run), "checkpoint.pt"), weights_only=True)
    starts = np.array(metrics["window_starts"])
    assert len(starts) == 5 and metrics["episodes"] == ckpt["val_episodes"]
    ends = EpisodeStore.open(push_store).episode_ends
    for s in starts:  # every window lies inside one held-out episode
        e = int(np.searchsorted(ends, s, side="right"))
        assert e in ckpt["val_episodes"] and s + K + H <= ends[e]
    # copy-last recomputed by hand from the store at the reported windows
    frames = EpisodeStore.open(push_store).array("image_overhead")[:].astype(np.float32) / 255
    frames = np.moveaxis(frames, -1, 1)
    by_hand = np.mean([[psnr(frames[s + K - 1], frames[s + K + h]) for h in range(H)] for s in starts], 0)
    assert np.allclose(metrics["per_step"]["psnr"]["copy_last"], by_hand, atol=1e-3)
    # median frame: the per-pixel median of the training episodes' frames, never of the evaluated ones
    train_steps = np.concatenate([np.arange(ends[e - 1] if e else 0, ends[e]) for e in ckpt["train_episodes"]])
    median = np.median(frames[train_steps], 0)
    by_hand = np.mean([[psnr(median, frames[s + K + h]) for h in range(H)] for s in starts], 0)
    assert np.allclose(metrics["per_step"]["psnr"]["median_frame"], by_hand, atol=1e-2)
    assert metrics["model_minus_median_frame_db"] == metrics["mean"]["psnr"]["model"] - metrics["mean"]["psnr"]["median_frame"]
    # reconstruction recomputed from the model's posterior over the same windows
    model, spec, _ = load_model(run)
    data = EpisodeArrays(EpisodeStore.open(push_store), spec)
    batch = data.batch(starts, K + H)
    posts, _ = model.observe(batch["image"], batch["action"])
    recon = model.decode(model.rssm.feat(posts), batch["image"][:, 0])["image"].clamp(0, 1).detach().numpy()
    expected = psnr(recon[:, K:], batch["image"][:, K:].numpy()).mean(0)
    assert np.allclose(metrics["per_step"]["psnr"]["reconstruction"], expected, atol=1e-3)
    for name in ("psnr", "ssim", "moved_psnr", "proprio_rmse", "contact_f1"):
        for method in ("model", "copy_last", "shuffled_actions", "reconstruction"):
            assert len(metrics["per_step"][name][method]) == H
            low, high = metrics["mean_ci"][name][method]
            if metrics["mean"][name][method] is not None:
                assert low - 1e-6 <= metrics["mean"][name][method] <= high + 1e-6
        assert (out / f"{name}.png").exists()
    # constant velocity by hand: qpos extrapolated with its last change, qvel held
    p = data.proprio[starts[:, None] + np.arange(K + H)]
    nq = EpisodeStore.open(push_store).info["nq"]
    step = np.concatenate([p[:, K - 1, :nq] - p[:, K - 2, :nq], np.zeros_like(p[:, 0, nq:])], -1)
    guess = p[:, K - 1 : K] + np.arange(1, H + 1)[None, :, None] * step[:, None]
    expected = np.sqrt(((guess - p[:, K:]) ** 2).mean(-1)).mean(0)
    assert np.allclose(metrics["per_step"]["proprio_rmse"]["constant_velocity"], expected, atol=1e-4)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {(r["metric"], r["method"]) for r in rows} >= {("ssim", "shuffled_actions"), ("contact_f1", "model")}
    assert len([r for r in rows if r["metric"] == "psnr" and r["method"] == "model"]) == H
    # the simulator re-run from the recorded states reproduces the recording exactly
    assert metrics["per_step"]["psnr"]["simulator"] == [60.0] * H
    assert max(metrics["per_step"]["proprio_rmse"]["simulator"]) < 1e-5
    assert metrics["simulator_scene_changed"] is False
    assert sum(1 for _ in iio.imiter(out / "rollouts.mp4")) == K + H
    gif = iio.imread(out / "rollouts.gif")
    assert gif.shape[:2] == (K + H, 2 * (4 * (64 + 2) + 4))  # rows truth | model | error | simulator
    assert json.loads((out / "metrics.json").read_text())["window_starts"] == metrics["window_starts"]
    assert metrics["action_sensitivity"]["delta_psnr_db"] != 0.0  # this model's actions do matter to it


def test_model_ignoring_actions_gets_zero_delta_and_the_report_says_so(deaf_run, push_store, tmp_path):
    metrics = evaluate(deaf_run, push_store, tmp_path, context=K, horizon=H, windows=5, seed=3,
                       episodes="all", show_progress=False)
    assert metrics["episodes"] == list(range(6))
    act = metrics["action_sensitivity"]
    assert act["delta_psnr_db"] == pytest.approx(0.0, abs=1e-6) and act["ignores_actions"]
    assert metrics["per_step"]["psnr"]["shuffled_actions"] == metrics["per_step"]["psnr"]["model"]
    assert "The model ignores its actions" in (tmp_path / "report.html").read_text()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_html_report_shows_its_images_in_headless_chromium(report, tmp_path):
    _, out = report
    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == len(METRICS) and 'src="data:image/gif;base64,' in html
    assert "<td>" in html and "file://" not in html  # self-contained: every image is inlined
    shown = screenshot(out / "report.html", tmp_path / "shown.png", 6000)
    # the same page with every image's data cut off: what a reader would see if the images failed to load
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,AAAA", html))
    blank = screenshot(broken, tmp_path / "blank.png", 6000)
    assert (np.abs(shown - blank).max(-1) > 30).sum() > 200_000  # the plots and the video are drawn (whole page)

    def count(rgb, tol=12):
        return int((np.abs(shown - np.array(rgb)).max(-1) <= tol).sum())

    assert count((40, 200, 60)) + count((220, 40, 40)) > 2000  # the video's context / imagined frames


def test_viewer_runs_headless_with_posted_keys(run, push_store):
    model, spec, _ = load_model(run)
    data = EpisodeArrays(EpisodeStore.open(push_store), spec)
    viewer = Viewer(model, data, context=K, horizon=50, scale=2)
    assert viewer.state.horizon == 30 - K  # clamped to the episode
    screen = init_display(panels_size(64, 2, 4), "test view")
    try:
        for key in (pygame.K_UP, pygame.K_MINUS, pygame.K_PERIOD, pygame.K_b, pygame.K_b):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
        for _ in range(K + 2):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT))
        assert view_loop(viewer, screen, fps=1000, max_frames=3) == 3
        s = viewer.state
        assert (s.episode, s.start, s.horizon, s.method, s.t) == (1, 1, 30 - K - 5, "copy_last", K + 2)
        # the real panel shows the store's frame, the copy-last panel the last context frame
        first = int(data.episode_ends[0]) + s.start
        for panel, step in ((0, first + s.t), (1, first + K - 1)):
            x, y = PAD + panel * (64 * 2 + PAD) + 2 * 30 + 1, PAD + LINE + 2 * 20 + 1
            assert tuple(screen.get_at((x, y)))[:3] == tuple(data.frames[step][20, 30])
        assert "copy_last" in viewer.lines()[1]
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_q))
        assert view_loop(viewer, screen, fps=1000, max_frames=10) == 0
    finally:
        pygame.quit()


def test_dream_drives_simulator_and_model_together_and_resyncs(run):
    dream = open_dream(run, "push")
    screen = init_display(panels_size(64, 2, 3), "test dream")
    keyboard = KeyboardDevice(dream.scene.action_spec, default_bindings(dream.scene), dream.scene.control_rate)
    try:
        keyboard.connect()
        x0 = dream.scene.pusher_xy()
        before = dream.pred.copy()
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT))
        assert dream_loop(dream, screen, 2, keyboard, paced=False, max_steps=10) == 10
        assert dream.scene.pusher_xy()[0] - x0[0] > 0.05  # right arrow pushes +x in the simulator
        assert dream.since_resync == 10 and len(dream.latency_ms) == 10 and min(dream.latency_ms) > 0
        assert not np.array_equal(before, dream.pred)  # the model stepped too
        assert "model step" in dream.lines(np.zeros(2))[1]
        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_RIGHT))
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_r))  # the record command: resync
        assert dream_loop(dream, screen, 2, keyboard, paced=False, max_steps=1) == 1
        assert dream.since_resync == 1 and dream.steps == 11
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_TAB))  # reset: a new episode
        assert dream_loop(dream, screen, 2, keyboard, paced=False, max_steps=1) == 1
        assert dream.steps == 1 and dream.seed == 1
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
        assert dream_loop(dream, screen, 2, keyboard, paced=False, max_steps=5) == 0
    finally:
        keyboard.disconnect()
        dream.scene.close()
        pygame.quit()


def test_bad_input_gives_one_line_errors(run, push_store, tmp_path):
    empty = tmp_path / "empty.zarr"
    EpisodeStore.create(empty, load("push").info()).close()
    assert_one_line_error(teleworld("replay", "--model", run, "--data", str(empty), "--out", str(tmp_path / "r")),
                          "holds no committed episodes")
    assert_one_line_error(teleworld("replay", "--model", run, "--data", push_store, "--out", str(tmp_path / "r")),
                          "needs context + horizon = 55 steps but the evaluated episodes hold at most 30")
    other = make_store(tmp_path / "other.zarr", scene_name="pusher_v2")
    assert_one_line_error(teleworld("view", "--model", run, "--data", other),
                          "model was trained on scene='push' but the data has scene='pusher_v2'")
    other_run = fit(other, tmp_path / "other_run")
    assert_one_line_error(teleworld("dream", "--model", other_run, "--scene", "push"),
                          "model was trained on scene 'pusher_v2', not 'push'")
    assert_one_line_error(teleworld("dream", "--model", run, "--operator", "gamepad"), "no gamepad found")
