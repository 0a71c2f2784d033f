"""check-sim re-simulates real episodes; video writes an annotated MP4; episode metadata is complete."""

import os
import shutil
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
from typer.testing import CliRunner

from recorder import EpisodeStore
from recorder.cli import data_app
from recorder.schema import EPISODE_FIELDS
from recorder.video import episode_video
from teleop.checksim import check_sim
from teleworld.errors import TeleworldError


def test_recorded_episodes_resimulate_exactly(push_store):
    result = check_sim(EpisodeStore.open(push_store), 3)
    assert result.ok and result.steps == 30 and result.max_error == 0.0 and not result.scene_changed


def test_a_changed_action_is_reported_at_the_step_it_takes_effect(tmp_path, push_store):
    path = tmp_path / "s.zarr"
    shutil.copytree(push_store, path)
    with EpisodeStore.open(path, mode="a") as store:
        start = store.episode_slice(2).start
        store.arr("data/action")[start + 11] = -store.arr("data/action")[start + 11] + 0.5
    result = check_sim(EpisodeStore.open(path), 2)
    assert result.first_divergence == 12 and result.error_at_divergence > 1e-3
    assert check_sim(EpisodeStore.open(path), 1).ok
    cli = subprocess.run([sys.executable, "-m", "teleworld", "data", "check-sim", str(path), "1", "2"],
                         capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl"}, timeout=300)
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines()[-1] == "error: 1 of 2 episodes diverge; first: episode 2 at step 12 by " + \
        f"{result.error_at_divergence:.2e}"



def test_episode_video_has_every_frame_and_an_overlay(tmp_path, push_store):
    store = EpisodeStore.open(push_store)
    out = tmp_path / "ep.mp4"
    assert episode_video(store, 1, out, scale=4)["frames"] == 30
    frames = np.stack([f for f in imageio.get_reader(out)])
    assert frames.shape == (30, 64 * 4 + 30, 64 * 4, 3)
    assert frames[:, -30:].max() > 200  # the text bar under the frames is drawn
    assert not np.array_equal(frames[0, :14], frames[-1, :14])  # the time line changes


def test_episode_info_holds_every_documented_field(push_store):
    info = EpisodeStore.open(push_store).episode_info(0)
    missing = set(EPISODE_FIELDS) - set(info) - {"partial"}  # 'partial' is only set on salvaged episodes
    assert not missing, missing
    assert info["operator"] == "scripted" and info["length"] == 30 and info["timing"]["late_steps"] == 0


def test_tools_refuse_missing_episodes(push_store):
    cli = CliRunner().invoke(data_app, ["video", push_store, "9"])
    assert isinstance(cli.exception, TeleworldError) and "episode 9 does not exist" in str(cli.exception)
    with pytest.raises(TeleworldError, match="episode 9 does not exist"):
        check_sim(EpisodeStore.open(push_store), 9)


def test_episode_info_holds_the_goal_and_success_the_scene_had(push_store):
    from teleop.scenes import load

    store = EpisodeStore.open(push_store)
    scene = load("push")
    for episode in range(3):
        info = store.episode_info(episode)
        scene.reset(info["seed"])
        assert info["goal"] == scene.goal().tolist() and len(info["goal"]) == 2
        final = store.episode(episode, ["reward"])["reward"][-1]
        assert info["success"] == bool(-final < 0.05)  # push succeeds within 5 cm of the goal


def _without_goals(path) -> list[list[float]]:
    """Remove the goal from every episode's info (as in a store recorded before goals); returns the goals."""
    import json

    with EpisodeStore.open(path, mode="a") as store:
        goals = []
        for e in range(store.num_episodes):
            info = store.episode_info(e)
            goals.append(info.pop("goal"))
            store.arr("meta/episode_info")[e] = json.dumps(info)
    return goals


def test_add_goals_recovers_the_goals_a_store_lacks(tmp_path, push_store):
    from teleop.goals import add_goals

    path = tmp_path / "s.zarr"
    shutil.copytree(push_store, path)
    goals = _without_goals(path)
    cli = subprocess.run([sys.executable, "-m", "teleworld", "data", "add-goals", str(path)], capture_output=True,
                         text=True, env={**os.environ, "MUJOCO_GL": "egl"}, timeout=300)
    assert cli.returncode == 0 and "goals written for 6 episodes" in cli.stdout
    store = EpisodeStore.open(path)
    assert [store.episode_info(e)["goal"] for e in range(6)] == goals
    with EpisodeStore.open(path, mode="a") as store:
        assert add_goals(store) == 0  # nothing left to add


def test_add_goals_refuses_a_recording_the_scene_no_longer_reproduces(tmp_path, push_store):
    from teleop.goals import add_goals

    path = tmp_path / "s.zarr"
    shutil.copytree(push_store, path)
    _without_goals(path)
    with EpisodeStore.open(path, mode="a") as store:
        store.arr("data/reward")[store.episode_slice(4).start] += 0.01
        with pytest.raises(TeleworldError, match="episode 4 .* cannot be recovered"):
            add_goals(store)
        assert all("goal" not in store.episode_info(e) for e in range(6))  # all or nothing
