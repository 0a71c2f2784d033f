"""Position error on real inputs: the simulator's truth, a detector trained on real push frames, copy-last's error
against the box's real displacement, and `model_unblended` next to `model` in a full replay of a tiny real model."""

import json

import numpy as np
import pytest
import torch

from conftest import record
from recorder import EpisodeStore
from replay import metrics as M
from replay import positions as P
from replay.evaluate import evaluate
from replay.rollout import WindowBatch, predict
from replay.scores import FLOOR_METHOD, position_scores, summarise_positions
from teleop.scenes import SCENES, load
from train.checkpoint import load_model, save_checkpoint
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train

TRAIN, HELD_OUT = list(range(8)), [8, 9]
K, H = 3, 20
CAMERA = "overhead"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> EpisodeStore:
    """10 scripted push episodes of 30 steps (the expert pushes the box toward its goal)."""
    return EpisodeStore.open(record(tmp_path_factory.mktemp("pos") / "push.zarr", episodes=10, steps=30))


@pytest.fixture(scope="module")
def frames(store) -> np.ndarray:
    return np.asarray(store.array(f"image_{CAMERA}")[: store.num_steps])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache") / P.CACHE_NAME


@pytest.fixture(scope="module")
def tracker(store, frames, cache) -> P.Tracker:
    """A detector trained on the first 8 episodes' frames only."""
    bodies = P.tracked_bodies(store)
    detector = P.load_or_fit(cache, "key-a", store, frames, CAMERA, bodies, TRAIN)
    return P.Tracker(store, CAMERA, bodies, detector)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_every_scene_tracks_bodies_it_has(name):
    scene = load(name)
    try:
        assert scene.tracked_bodies and all(scene.model.body(b).id > 0 for b in scene.tracked_bodies)
    finally:
        scene.close()


def held_out_steps(store) -> np.ndarray:
    return P.training_steps(store, HELD_OUT, count=10_000)


def test_truth_is_the_recorded_state_seen_through_the_camera(store, frames):
    assert P.tracked_bodies(store) == ("box", "pusher")
    steps = held_out_steps(store)
    world, image = P.true_positions(store, steps, ("box", "pusher"), CAMERA)
    qpos = store.read("data/qpos", steps)
    assert np.allclose(world[:, 0], qpos[:, 2:5], atol=1e-6)  # the box's free joint holds its centre
    assert np.allclose(world[:, 1, :2], qpos[:, 0:2], atol=1e-6)  # the pusher slides in x, y
    size = frames.shape[1]
    col, row = np.clip(((image + 1) / 2 * size).astype(int), 0, size - 1).transpose(2, 0, 1)
    pixels = frames[steps[:, None], row, col].astype(int)  # (N, bodies, 3)
    assert np.mean(pixels[:, 0, 2] > pixels[:, 0, 0] + 40) > 0.9  # the box is blue where the camera sees it
    assert np.mean(pixels[:, 1, 0] > pixels[:, 1, 2] + 40) > 0.9  # the pusher is red


def test_detector_on_real_held_out_frames_is_near_its_floor(store, frames, tracker):
    steps = held_out_steps(store)
    truth, _ = P.true_positions(store, steps, tracker.bodies, CAMERA)
    found = P.detect(tracker.detector, np.moveaxis(frames[steps], -1, 1) / 255.0)
    error = M.distance_cm(found, truth)  # (N, bodies)
    spread = M.distance_cm(truth.mean(0), truth)  # guessing the mean position
    assert np.all(error.mean(0) < 1.5) and np.all(error.mean(0) < 0.15 * spread.mean(0))
    shifted = M.distance_cm(found, np.roll(truth, 10, axis=0))  # the right frames read against other steps' truth
    assert np.all(shifted.mean(0) > 3 * error.mean(0) + 1.0)


def window_batch(store, frames, starts: np.ndarray) -> WindowBatch:
    """Real frames of K + H steps per window; copy_last holds frame K-1, "model" is the real future (a perfect
    model), both as replay's rollouts give them."""
    idx = starts[:, None] + np.arange(K + H)[None]
    images = np.moveaxis(frames[idx], -1, 2).astype(np.float32) / 255.0
    preds = {"copy_last": {"image": np.repeat(images[:, K - 1 : K], H, 1)}, "model": {"image": images[:, K:]}}
    return WindowBatch(starts, K, {"image": images}, preds, images[:, :K])


def test_copy_last_error_is_the_box_real_displacement(store, frames, tracker):
    data = EpisodeArrays(store, DataSpec.from_store(store))
    batch = window_batch(store, frames, data.windows(K + H, np.asarray(HELD_OUT)))
    tracker.annotate(batch)
    errors = position_scores(batch)  # method -> (W, H, bodies) cm
    truth = batch.truth["position"]
    displacement = M.distance_cm(truth[:, K:], truth[:, K - 1 : K])  # the simulator's: how far each body moved
    box = tracker.bodies.index("box")
    assert displacement[..., box].mean() > 2.0  # the expert does push the box in these windows
    gap = np.abs(errors["copy_last"] - displacement)
    assert gap[..., box].mean() < 1.0
    perfect, floor = errors["model"], errors[FLOOR_METHOD]
    assert np.allclose(perfect, floor)  # the real future read by the detector is the floor itself
    assert floor.mean() < 1.5 and errors["copy_last"][:, -1, box].mean() > floor[:, -1, box].mean() + 2.0
    summary = summarise_positions(errors, list(tracker.bodies))
    band = summary["bands"]["box"][f"10-{H}"]["copy_last"]
    assert band["mean"] == pytest.approx(displacement[:, 9:, box].mean(), abs=1.0)
    assert band["ci"][0] <= band["mean"] <= band["ci"][1]
    assert summary["floor"]["box"] == pytest.approx(floor[..., box].mean(), abs=1e-4)


def test_cached_detector_is_reused_only_for_its_key(store, frames, tracker, cache):
    stamp = cache.stat().st_mtime_ns
    again = P.load_or_fit(cache, "key-a", store, frames, CAMERA, tracker.bodies, TRAIN)
    assert cache.stat().st_mtime_ns == stamp
    for a, b in zip(again.state_dict().values(), tracker.detector.state_dict().values()):
        assert torch.equal(a, b)
    P.load_or_fit(cache, "key-b", store, frames, CAMERA, tracker.bodies, TRAIN[:4])
    assert cache.stat().st_mtime_ns != stamp
    assert torch.load(cache, weights_only=True)["key"] == "key-b"


@pytest.fixture(scope="module")
def blended_run(store, tmp_path_factory) -> str:
    """A tiny model with a blend trained for a few steps, its blend then forced to keep the last context frame
    entirely: its blended frames are copy-last's, its own frames are not."""
    data = EpisodeArrays(store, DataSpec.from_store(store))
    out = tmp_path_factory.mktemp("run")
    path = train(data, make_config("tiny", steps=3, blend=True, rollout_steps=4), out, show_progress=False)["checkpoint"]
    model, spec, ckpt = load_model(path)
    with torch.no_grad():
        model.blend.net[-1].bias.fill_(50.0)  # sigmoid(48) = 1: the gate keeps the last frame
    return str(save_checkpoint(path, model, spec, ckpt["step"], {k: ckpt[k] for k in ("val_episodes",
                                                                                        "train_episodes")}))


def test_replay_reports_positions_and_the_unblended_model(blended_run, store, tmp_path):
    metrics = evaluate(blended_run, store.path, tmp_path, context=K, horizon=12, windows=4, seed=1,
                       show_progress=False)
    psnr = metrics["per_step"]["psnr"]
    assert psnr["model"] == pytest.approx(psnr["copy_last"], abs=1e-3)  # all blend
    assert np.mean(np.abs(np.subtract(psnr["model_unblended"], psnr["copy_last"]))) > 0.5  # its own frames
    assert metrics["model_unblended_minus_copy_last_db"] == pytest.approx(
        metrics["mean"]["psnr"]["model_unblended"] - metrics["mean"]["psnr"]["copy_last"])
    for name in ("psnr", "ssim", "proprio_rmse", "position_error"):
        assert "model_unblended" in metrics["mean"][name]
    pos = metrics["position_error"]
    assert pos["bodies"] == ["box", "pusher"] and set(pos["bands"]["box"]) == {"1-9", "10-12"}
    assert pos["per_body"]["box"]["per_step"]["model"] == pytest.approx(
        pos["per_body"]["box"]["per_step"]["copy_last"], abs=1e-3)
    assert 0 < pos["floor"]["all"] < 1.5
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["position_error"]["floor"] == pos["floor"]
    page = (tmp_path / "report.html").read_text()
    assert "model_unblended" in page and "Where the objects are" in page
    assert (tmp_path / "position_error.png").stat().st_size > 0
    stamp = (tmp_path / P.CACHE_NAME).stat().st_mtime_ns
    again = evaluate(blended_run, store.path, tmp_path, context=K, horizon=12, windows=4, seed=1, show_progress=False)
    assert (tmp_path / P.CACHE_NAME).stat().st_mtime_ns == stamp  # the second replay reuses the detector
    assert again["position_error"]["per_body"] == pos["per_body"]


def test_a_model_without_blend_has_no_unblended_method(store, blended_run):
    model, spec, _ = load_model(blended_run)
    model.blend = None
    data = EpisodeArrays(store, DataSpec.from_store(store))
    batch = data.batch(np.array([0, 30]), K + 4, "cpu")
    shuffled = batch["action"].clone()
    _, preds, _ = predict(model, batch, shuffled, K)
    assert "model" in preds and "model_unblended" not in preds
