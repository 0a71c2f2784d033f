"""The state-space model (`teleworld train --config state`): trained on a real store, planned with in real MuJoCo."""

import json

import numpy as np
import pytest
import torch

from recorder import EpisodeStore
from teleworld.errors import TeleworldError
from test_plan import TINY_PLAN, dreaming_planner, teleworld
from train.dataset import DataSpec, EpisodeArrays
from train.checkpoint import read_checkpoint, write_checkpoint
from replay.planning import StateScorer
from train.state_encoder import canonical_state, orientation_layout
from train.state_model import (FramePairs, StateModel, StateModelConfig, StateTrainSettings, Windows,
                               load_state_model, train_state_model)


@pytest.fixture(scope="module")
def state_run(push_store, tmp_path_factory):
    """`teleworld train --config state` through the CLI, output piped to files."""
    out = tmp_path_factory.mktemp("state")
    result = teleworld("train", "--config", "state", "--data", push_store, "--out", str(out / "run"), "--steps",
                       "20", log=out)
    assert result.returncode == 0, result.stderr
    return out / "run", result


def test_train_state_prints_its_validation_next_to_copy_last(state_run):
    run, result = state_run
    assert "checkpoint:" in result.stdout and "vs copy-last" in result.stdout
    model, spec, ckpt = load_state_model(run)
    assert spec.scene == "push" and ckpt["step"] == 20 and ckpt["kind"] == "state"
    assert model.cfg.goal_dim == 2 and float(model.std.min()) >= 1e-3


def test_state_model_learns_the_pushers_motion_from_the_actions(push_store, tmp_path):
    """Unrolled 8 steps on held-out windows, the trained model places the pusher (which moves as the actions say)
    well within copy-last's error."""
    store = EpisodeStore.open(push_store)
    data = EpisodeArrays(store, DataSpec.from_store(store), cache="chunks")
    result = train_state_model(data, tmp_path / "run", StateTrainSettings(steps=1000, batch_size=128),
                               show_progress=False)
    model, _, ckpt = load_state_model(result["checkpoint"])
    held_out = Windows(data, np.array(ckpt["val_episodes"]), 9, data.proprio)
    batch = held_out.batch(held_out.starts)
    with torch.no_grad():
        imagined = model.imagine(batch["state"][:, 0], batch["action"][:, :-1])
    pusher_error = (imagined[..., :2] - batch["state"][:, 1:, :2]).norm(dim=-1).mean()
    copy_error = (batch["state"][:, :1, :2] - batch["state"][:, 1:, :2]).norm(dim=-1).mean()
    assert pusher_error < 0.5 * copy_error, (pusher_error, copy_error)


def test_plan_with_a_state_model_end_to_end(state_run, tmp_path):
    run, _ = state_run
    result = teleworld("plan", "--model", str(run), "--out", str(tmp_path / "plan"), "--episodes", "1", "--steps",
                       "6", "--methods", "model,random", "--rank-checks", "1", *TINY_PLAN, log=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert set(summary["methods"]) == {"model", "random"} and summary["methods"]["model"]["episodes"] == 1
    assert (tmp_path / "plan" / "plan_model.mp4").stat().st_size > 0


@pytest.mark.parametrize("command", [["replay", "--out", "{out}"], ["view"]])
def test_a_state_model_is_refused_where_frames_are_needed_in_one_line(state_run, push_store, tmp_path, command):
    run, _ = state_run
    args = [a.format(out=tmp_path / "out") for a in command]
    result = teleworld(args[0], "--model", str(run), "--data", push_store, *args[1:], log=tmp_path)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "state model" in lines[0], result.stderr


@pytest.mark.parametrize("flags", [["--set", "deter=64"], ["--resume"], ["--seq-len", "8"], ["--device", "cuda"]])
def test_train_state_refuses_what_it_does_not_take_in_one_line(push_store, tmp_path, flags):
    result = teleworld("train", "--config", "state", "--data", push_store, "--out", str(tmp_path / "run"), *flags,
                       log=tmp_path)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "state model" in lines[0], result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_state_names_the_step_extras_a_store_records_when_asked_for_others(push_store, tmp_path):
    result = teleworld("train", "--config", "state", "--data", push_store, "--out", str(tmp_path / "run"), "--set",
                       "extras=ee_pose", log=tmp_path)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "no step extra 'ee_pose'; it records none" in lines[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_state_takes_the_reward_heads_depth_and_the_extras_from_set(push_store, tmp_path):
    result = teleworld("train", "--config", "state", "--data", push_store, "--out", str(tmp_path / "run"), "--steps",
                       "5", "--set", "reward_layers=3", "--set", "reward_weight=3", "--set", "extras=none",
                       log=tmp_path)
    assert result.returncode == 0, result.stderr
    model, _, ckpt = load_state_model(tmp_path / "run")
    hidden = [m for m in model.reward_head if isinstance(m, torch.nn.Linear)][:-1]
    assert len(hidden) == 3 and model.cfg.extras == [] and ckpt["settings"]["reward_weight"] == 3


def test_a_state_model_saved_before_the_step_extras_still_loads(state_run, tmp_path):
    """Runs from stop 37 named the state proprio_dim and had a one-layer reward head."""
    run, _ = state_run
    ckpt = read_checkpoint(run / "checkpoint.pt")
    cfg = {**ckpt["config"], "reward_layers": 1}
    old = StateModel(StateModelConfig(**cfg))
    legacy = {k: v for k, v in cfg.items() if k not in ("state_dim", "extras", "reward_layers")}
    write_checkpoint(tmp_path / "checkpoint.pt", {**ckpt, "config": {**legacy, "proprio_dim": cfg["state_dim"]},
                                                  "model": old.state_dict()})
    model, _, _ = load_state_model(tmp_path / "checkpoint.pt")
    assert model.cfg.reward_layers == 1 and model.cfg.state_dim == cfg["state_dim"] and model.cfg.extras == []


@pytest.fixture(scope="module")
def frames_run(push_store, tmp_path_factory):
    """A state model whose encoder reads the state from the camera (`--set observe=frames`), through the CLI."""
    out = tmp_path_factory.mktemp("frames")
    result = teleworld("train", "--config", "state", "--data", push_store, "--out", str(out / "run"), "--steps",
                       "300", "--set", "observe=frames", "--set", "batch_size=64", "--set", "encoder_batch=32",
                       log=out)
    assert result.returncode == 0, result.stderr
    return out / "run", result


def test_the_encoder_reads_where_pusher_and_box_are_from_held_out_frames(frames_run, push_store):
    """On frames of the episode it never trained on, the encoder places the pusher and the box far closer than
    the training mean does (the baseline of reading nothing)."""
    run, result = frames_run
    assert "encoder" in result.stdout
    model, spec, ckpt = load_state_model(run)
    store = EpisodeStore.open(push_store)
    data = EpisodeArrays(store, spec, cache="chunks")
    pairs = FramePairs(data, np.array(ckpt["val_episodes"]), data.proprio)
    frame, previous, _ = pairs.batch(np.arange(len(pairs.steps)))
    with torch.no_grad():
        read = model.estimate(frame, previous)[:, :4]
    truth = torch.from_numpy(data.proprio[pairs.steps, :4])
    error = (read - truth).view(-1, 2, 2).norm(dim=-1).mean()
    baseline = (model.mean[:4] - truth).view(-1, 2, 2).norm(dim=-1).mean()
    assert error < 0.3 * baseline, (error, baseline)


def test_a_frames_state_model_plans_without_reading_the_simulators_state(frames_run, tmp_path):
    """Its scores are the same whatever state the scene reports (NaN here): only the frames reach it."""
    run, _ = frames_run
    model, _, _ = load_state_model(run)
    scores = []
    for proprio in (torch.zeros(1, 17), torch.full((1, 17), float("nan"))):
        scorer = StateScorer(model, np.zeros(2, np.float32))
        torch.manual_seed(0)
        frame = torch.rand(1, 3, 64, 64)
        scorer.observe(frame, None, proprio)
        scorer.observe(frame.roll(2, -1), None, proprio)
        scores.append(scorer(torch.zeros(4, 5, 2)))
    assert torch.isfinite(scores[0]).all() and torch.equal(scores[0], scores[1])
    result = teleworld("plan", "--model", str(run), "--out", str(tmp_path / "plan"), "--episodes", "1", "--steps",
                       "6", "--methods", "model", *TINY_PLAN, log=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "plan" / "plan.json").read_text())["methods"]["model"]["episodes"] == 1
    import imageio.v3 as iio

    frame = iio.imread(tmp_path / "plan" / "plan_model.mp4", index=3)  # real | imagined end of the plan | goal
    third = frame.shape[1] // 3
    assert np.ptp(frame[:, third + 8 : 2 * third - 8]) > 100, "the imagined panel is blank"


def test_a_scene_renders_a_pose_it_is_not_in_and_keeps_its_own_state():
    """How plan draws a state model's imagined state: the pusher drawn elsewhere, the scene's state untouched."""
    from teleop.scenes import load

    scene = load("push")
    try:
        obs = scene.reset(3)
        before = scene.get_state()
        here = scene.render_pose(obs.qpos, "overhead")
        moved = obs.qpos.copy()
        moved[:2] = -moved[:2]
        there = scene.render_pose(moved, "overhead")
        assert np.array_equal(here, scene.render("overhead")) and not np.array_equal(here, there)
        assert np.array_equal(scene.get_state(), before)
    finally:
        scene.close()


@pytest.mark.parametrize("setting, message", [("observe=lidar", "observe must be state or frames"),
                                              ("encoder_batch=0", "encoder_batch must be at least 1")])
def test_train_state_refuses_a_wrong_encoder_setting_in_one_line(push_store, tmp_path, setting, message):
    result = teleworld("train", "--config", "state", "--data", push_store, "--out", str(tmp_path / "run"), "--set",
                       "observe=frames", "--set", setting, log=tmp_path)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_state_read_from_frames_signs_quaternions_and_wraps_unlimited_angles():
    """q and -q are one orientation, and an unlimited hinge looks the same a turn later: one reading each."""
    state = np.zeros((2, 17), np.float32)
    state[:, 5:9] = [[0.6, 0, 0, 0.8], [-0.6, 0, 0, -0.8]]
    state[:, 0] = [1.0, 1.0 + 4 * np.pi]
    read = canonical_state(state, [5], [0])
    assert np.allclose(read[0], read[1], atol=1e-5) and read[1, 5] == np.float32(0.6) and state[1, 5] == -0.6
    assert torch.allclose(canonical_state(torch.from_numpy(state), [5], [0]), torch.from_numpy(read))


@pytest.mark.parametrize("scene, layout", [("push", ([5], [])), ("reacher-hard", ([], [0])),
                                           ("cartpole-swingup", ([], [1])), ("arm", ([3], [7, 10, 11, 12]))])
def test_every_scene_records_where_its_orientations_are(scene, layout):
    """Stores record the layout (info qpos_orientations); one recorded before they did is read from its MJCF where
    that compiles alone (push), and refused in one line where it names files the store does not hold."""
    from teleop.scenes import load

    sim = load(scene)
    try:
        info = sim.info()
    finally:
        sim.close()
    assert orientation_layout(info) == layout
    older = {k: v for k, v in info.items() if k != "qpos_orientations"}
    if scene == "push":
        assert orientation_layout(older) == layout
    else:  # dm_control's includes, the arm's meshes
        with pytest.raises(TeleworldError, match="record it again"):
            orientation_layout(older)


def test_a_reacher_read_from_frames_counts_its_shoulder_a_turn_apart_as_the_same(tmp_path):
    """reacher's shoulder winds round many times under random actions: a model that reads frames compares its
    angle the short way round; one that reads the simulator's state keeps the winding."""
    store = tmp_path / "reacher.zarr"
    result = teleworld("generate", "--scene", "reacher-hard", "--out", str(store), "--episodes", "2", "--steps",
                       "12", "--workers", "1", log=tmp_path)
    assert result.returncode == 0, result.stderr
    opened = EpisodeStore.open(store)
    data = EpisodeArrays(opened, DataSpec.from_store(opened), cache="chunks")
    for observe, angles in (("frames", [0]), ("state", [])):
        trained = train_state_model(data, tmp_path / observe, StateTrainSettings(steps=2, observe=observe,
                                                                                  val_fraction=0), show_progress=False)
        model, _, _ = load_state_model(trained["checkpoint"])
        state = torch.tensor([[0.5, 0.1, 0.0, 0.0]])
        turned = state + torch.tensor([[2 * np.pi, 0.0, 0.0, 0.0]])
        assert model.cfg.angles == angles and (model.error(turned, state).sum() < 1e-6) == (observe == "frames")


def test_dream_plan_with_a_frames_state_model_drives_the_scene_and_draws_its_imagination(frames_run):
    """`dream --plan` with a state model that reads frames: the planner drives, the keys move the goal, the model's
    panel is the scene rendered in the imagined state, and a resync puts that state back on the real one."""
    from replay.dream import StateDream

    run, _ = frames_run
    with dreaming_planner(run) as (dream, driver, goal, pusher):
        assert isinstance(dream, StateDream)
        assert dream.scene.goal()[0] > goal[0] + 0.01 and not np.allclose(dream.scene.pusher_xy(), pusher)
        assert driver.imagined is not None and driver.imagined.shape == (64, 64, 3) and dream.since_resync == 6
        assert np.ptp(dream.pred) > 0.3  # the scene drawn in the imagined state, not a blank panel
        imagined = dream.state.clone()
        dream.resync()
        assert dream.since_resync == 0 and not torch.equal(dream.state, imagined)
