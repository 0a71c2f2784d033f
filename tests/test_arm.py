"""The `arm` scene for real: keys through a teleop session move the Jaco's hand by the commanded amount and pick
the block up; the IK keeps the hand off the table; the expert places the block; generate writes a valid store;
the declared per-step extras round-trip through the store and both exports. Real MuJoCo, mink, pygame and Zarr."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pygame
import pytest
import torch
import zarr

from recorder import EpisodeStore, EpisodeWriter
from recorder.export import export_diffusion_policy, export_lerobot
from recorder.schema import step_specs
from replay.planning import StateScorer
from teleop.bindings import load_bindings
from teleop.devices.keyboard import KeyboardDevice
from teleop.devices.scripted import scripted_operator
from teleop.loop import run_episode, step_record
from teleop.scenes import load
from teleop.scenes.arm import FINGER_JOINTS, JOINT_SPEED, MAX_LINEAR, MAX_YAW, ArmScene
from teleop.session import TeleopSession
from teleworld.errors import TeleworldError
from train.dataset import DataSpec, EpisodeArrays
from train.state_model import load_state_model

ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
CM_PER_TICK = MAX_LINEAR / ArmScene.control_rate * 100  # a key held n ticks (ramp up and down) moves n of these


def hold(session: TeleopSession, key: int, ticks: int, settle: int = 6) -> None:
    """Hold ``key`` for ``ticks`` control steps, release it, and let the ramp and the arm settle."""
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
    for _ in range(ticks):
        assert session.tick()
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key))
    for _ in range(settle):
        assert session.tick()


def test_keys_move_the_hand_by_the_commanded_amount_then_grasp_and_lift(tmp_path, window):
    scene = load("arm")
    device = KeyboardDevice(scene.action_spec, load_bindings(None, scene), scene.control_rate)
    device.connect()
    store = EpisodeStore.create(tmp_path / "a.zarr", scene.info())
    session = TeleopSession(scene, device, store, window, seed=3)
    hold(session, pygame.K_r, 0, settle=1)  # record (resets to seed 3's start)
    start, block = scene.tcp_position(), scene.object_position()
    dx, dy = np.round((block[:2] - start[:2]) * 100 / CM_PER_TICK).astype(int)  # the fixed key plan of seed 3
    turn = np.round(_face_offset(scene) / (MAX_YAW / scene.control_rate)).astype(int)
    assert abs(dx) >= 5 and abs(dy) >= 5  # held long enough to reach full scale: n ticks move exactly n cm
    hold(session, pygame.K_RIGHT if dx > 0 else pygame.K_LEFT, abs(dx), settle=10)
    moved_x = scene.tcp_position() - start
    hold(session, pygame.K_UP if dy > 0 else pygame.K_DOWN, abs(dy), settle=10)
    moved_y = scene.tcp_position() - start - moved_x
    if turn:
        hold(session, pygame.K_d if turn > 0 else pygame.K_a, abs(turn))
    hold(session, pygame.K_s, 26, settle=10)  # down: 26 cm asked from 25 cm up, the table stops it
    bottom = scene.tcp_position()
    hold(session, pygame.K_e, 14)  # close
    hold(session, pygame.K_w, 12, settle=10)  # up 12 cm
    lifted_to, held, grip = scene.object_position(), scene.held(), scene.grip()
    hud = session.hud().lines
    assert f"ee xyz {scene.tcp_position()[0]:+.3f}" in " ".join(hud) and "grip   closed (1.00)  holding" in hud
    hold(session, pygame.K_RETURN, 0, settle=1)  # save
    session.close()

    # moved the commanded direction by the commanded amount (1 cm per tick held), the other axes held still
    assert moved_x[0] == pytest.approx(dx * CM_PER_TICK / 100, abs=0.006)
    assert np.abs(moved_x[1:]).max() < 0.006
    assert moved_y[1] == pytest.approx(dy * CM_PER_TICK / 100, abs=0.006)
    assert abs(moved_y[0]) < 0.006 and abs(moved_y[2]) < 0.006
    # the table, not the command, ended the descent; the block came up with the hand, held by the fingers
    assert 0.0 < bottom[2] < block[2] + 0.01
    assert lifted_to[2] > block[2] + 0.08 and held and grip == pytest.approx(1.0)

    # recorded: the operator's end-effector command as the action, the pose and the joint command per step
    store = EpisodeStore.open(tmp_path / "a.zarr")
    episode = store.episode(0)
    assert episode["action"].shape[1] == 5 and np.abs(episode["action"][:, 0]).max() == 1.0
    assert np.allclose(episode["ee_pose"][1, :3], start, atol=1e-9)  # observed after the first tick
    assert episode["ee_pose"][:, 2].max() - episode["ee_pose"][:, 2].min() > 0.15
    assert episode["joint_command"][-1, 6] == pytest.approx(1.35)  # fingers commanded fully closed


def _face_offset(scene: ArmScene) -> float:
    """Yaw turn that lines the hand up with the nearest pair of the block's faces."""
    diff = scene.object_yaw() - scene.tcp_yaw()
    return float((diff + np.pi / 4) % (np.pi / 2) - np.pi / 4)


def test_ik_keeps_the_hand_off_the_table_and_joint_control_moves_joints():
    scene = ArmScene(cameras=("front",))
    scene.reset(0)
    lowest = []
    for _ in range(40):  # push down far past the table
        scene.step(np.array([0.0, 0.0, -1.0, 0.0, 0.0]))
        hand = [scene.model.geom(f"jaco/hand/{g}").id for g in ("finger_tip_1", "finger_tip_2", "finger_tip_3")]
        lowest.append(min(_geom_bottom(scene, g) for g in hand))
    assert min(lowest) > -0.002  # the fingertips never dug into the table
    assert scene.tcp_position()[2] < 0.05  # ...yet the hand went down to it

    joints = ArmScene(cameras=("front",), control="joint")
    joints.reset(0)
    assert joints.action_spec.names[0] == "joint_1" and joints.action_spec.size == 7
    q0 = joints.data.ctrl[0]
    for t in range(20):  # joint_1 at full speed for 10 steps, then held
        joints.step(np.array([1.0 if t < 10 else 0.0, 0, 0, 0, 0, 0, 0]))
    assert joints.data.ctrl[0] - q0 == pytest.approx(10 * JOINT_SPEED[0] / joints.control_rate)
    assert abs(joints.data.joint("jaco/joint_1").qpos[0] - joints.data.ctrl[0]) < 0.02  # the joint follows


def _geom_bottom(scene: ArmScene, geom: int) -> float:
    """Lowest world z of a mesh geom's vertices."""
    m, d = scene.model, scene.data
    mesh = m.geom_dataid[geom]
    start, count = m.mesh_vertadr[mesh], m.mesh_vertnum[mesh]
    verts = m.mesh_vert[start:start + count] @ d.geom_xmat[geom].reshape(3, 3).T + d.geom_xpos[geom]
    return float(verts[:, 2].min())


def test_recorded_state_resimulates_exactly_with_the_controller():
    scene = ArmScene(cameras=("front",))
    expert = scripted_operator(scene)
    obs = scene.reset(5)
    expert.on_reset(obs, np.random.default_rng(0))
    states, actions = [], []
    for _ in range(60):
        action = scene.action_spec.clip(expert.get_action(obs))
        states.append(obs.state)
        actions.append(action)
        obs = scene.step(action)
    again = ArmScene(cameras=("front",))
    again.reset(5)
    again.set_state(states[40])  # the IK's targets and the gripper live in ctrl and userdata: part of the state
    for t in range(40, 60):
        replayed = again.step(actions[t])
    assert np.array_equal(replayed.qpos, obs.qpos)


@pytest.mark.parametrize("seed", [0, 7, 11])
def test_expert_places_the_block(seed):
    scene = ArmScene(cameras=("front",), randomize=seed == 11)
    expert = scripted_operator(scene)
    assert expert.name == "scripted-arm-expert"
    run_episode(scene, expert, None, ArmScene.episode_steps, seed)
    assert scene.success() and scene.zone_distance() < 0.06 and not scene.held()


def test_success_is_a_plain_bool_when_the_block_hangs_over_the_zone():
    """generate writes success into the episode's JSON info: a numpy bool there stopped a run."""
    scene = ArmScene(image_size=(16, 16))
    scene.reset(0)
    scene.place_zone(scene.object_position()[:2])
    scene.data.qpos[scene._object_qpos + 2] += 0.05  # lifted over the zone's centre: not resting, so no success
    assert scene.success() is False
    scene.data.qpos[scene._object_qpos + 2] -= 0.05
    assert scene.success() is True
    scene.close()


def test_generate_arm_writes_a_store_validate_accepts_and_plan_runs_on_it(tmp_path):
    out = tmp_path / "arm.zarr"
    run = subprocess.run([sys.executable, "-m", "teleworld", "generate", "--scene", "arm", "--out", str(out),
                          "--episodes", "2", "--workers", "2", "--image-size", "32", "--randomize"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    check = subprocess.run([sys.executable, "-m", "teleworld", "data", "validate", str(out)], env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    store = EpisodeStore.open(out)
    assert store.num_episodes == 2 and store.num_steps == 2 * ArmScene.episode_steps
    info = store.episode_info(0)
    assert info["operator"] == "expert" and set(info["randomization"]) == set(ArmScene.randomization.ranges)
    assert {"image_front", "image_wrist", "ee_pose", "joint_command"} <= set(store.keys)

    # the arm in `teleworld plan`: a world model trained on these episodes plans, the goal-aware expert places
    teleworld = [sys.executable, "-m", "teleworld"]
    trained = subprocess.run([*teleworld, "train", "--data", str(out), "--out", str(tmp_path / "run"), "--config",
                              "tiny", "--steps", "10", "--set", "reward_weight=10"], env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    planned = subprocess.run([*teleworld, "plan", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "plan"),
                              "--methods", "model,expert", "--episodes", "1", "--steps", str(ArmScene.episode_steps),
                              "--candidates", "16", "--horizon", "4", "--iterations", "1", "--replan", "4"],
                             env=ENV, capture_output=True, text=True, timeout=600)
    assert planned.returncode == 0, planned.stderr
    methods = json.loads((tmp_path / "plan" / "plan.json").read_text())["methods"]
    assert methods["expert"]["success_rate"] == 1.0 and methods["model"]["plan_ms_p50"] > 0

    # a state model's state is concat(qpos, qvel) and the arm's step extras, laid out alike in training and in plan
    trained = subprocess.run([*teleworld, "train", "--config", "state", "--data", str(out), "--out",
                              str(tmp_path / "state"), "--steps", "5"], env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert trained.returncode == 0, trained.stderr
    model, _, _ = load_state_model(tmp_path / "state")
    extras = ["ee_pose", "joint_command"]
    assert model.cfg.extras == extras and model.cfg.state_dim == store.info["nq"] + store.info["nv"] + 14
    data = EpisodeArrays(store, DataSpec.from_store(store), cache="chunks")
    recorded = store.episode(1, extras)
    np.testing.assert_allclose(data.step_extras(extras)[store.episode_ends[0]],
                               np.concatenate([recorded["ee_pose"][0], recorded["joint_command"][0]]), rtol=1e-6)
    scene = ArmScene(image_size=(16, 16))
    obs = scene.reset(3)
    scorer = StateScorer(model, scene.goal())
    scorer.observe(None, None, torch.from_numpy(np.concatenate([obs.qpos, obs.qvel]))[None], obs.extras)
    np.testing.assert_allclose(scorer.proprio[0, -14:].numpy(),
                               np.concatenate([obs.extras["ee_pose"], obs.extras["joint_command"]]), rtol=1e-6)
    with pytest.raises(TeleworldError, match="ee_pose, joint_command"):
        scorer.observe(None, None, scorer.proprio[:, :-14], {})
    scene.close()


def test_step_extras_round_trip_through_store_and_exports(tmp_path):
    scene = ArmScene(image_size=(16, 16))
    obs = scene.reset(2)
    with EpisodeStore.create(tmp_path / "x.zarr", scene.info()) as store:
        writer = EpisodeWriter(store)
        writer.begin(seed=2)
        poses, commands = [], []
        for t in range(12):
            action = np.array([0.5, -0.5, 0.2, 0.3, 1.0], np.float32)
            poses.append(obs.extras["ee_pose"])
            commands.append(obs.extras["joint_command"])
            writer.add(*step_record(obs, action, float(t)))
            obs = scene.step(action)
        writer.end()
    store = EpisodeStore.open(tmp_path / "x.zarr")
    assert tuple(map(int, store.info["schema_version"].split("."))) >= (1, 3)  # step extras arrived in 1.3
    assert np.array_equal(store.episode(0)["ee_pose"], np.array(poses))
    assert np.array_equal(store.episode(0)["joint_command"], np.array(commands, np.float32))
    assert store.episode(0)["joint_command"][1, 6] > store.episode(0)["joint_command"][0, 6]  # closing

    export_diffusion_policy(store, tmp_path / "dp.zarr")
    dp = zarr.open_group(str(tmp_path / "dp.zarr"), mode="r")
    assert np.array_equal(dp["data/ee_pose"][:], np.array(poses))
    export_lerobot(store, tmp_path / "lr")
    frames = pd.read_parquet(tmp_path / "lr" / "data" / "chunk-000" / "file-000.parquet")
    assert np.allclose(np.stack(frames["joint_command"].to_numpy()), np.array(commands))
    features = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["features"]
    assert features["ee_pose"]["names"] == ["x", "y", "z", "qw", "qx", "qy", "qz"]

    # a store without extras (schema 1.2 and every other scene) has exactly the standard arrays
    plain = {k: v for k, v in scene.info().items() if k != "step_extras"}
    assert set(step_specs(scene.info())) - set(step_specs(plain)) == {"ee_pose", "joint_command"}
    with pytest.raises(ValueError, match="clashes"):
        step_specs({**scene.info(), "step_extras": {"qpos": {"shape": [1], "dtype": "float32"}}})


def test_fingers_are_the_gripper_command():
    scene = ArmScene(cameras=("front",))
    scene.reset(1)
    for t in range(12):  # close for 6 steps (0.3 s of the 0.5 s travel), then hold
        scene.step(np.array([0, 0, 0, 0, 1.0 if t < 6 else 0.0]))
    fingers = np.array([scene.data.joint(j).qpos[0] for j in FINGER_JOINTS])
    assert scene.grip() == pytest.approx(6 / scene.control_rate / 0.5)
    assert np.allclose(fingers, scene.data.ctrl[6:9], atol=0.08) and fingers.min() > 0.8  # at the target
