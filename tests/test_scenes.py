import numpy as np
import pytest

from replay.plan import move_goal
from teleop.scenes import SCENES, load
from teleop.scenes.push import PushScene, PushTask
from teleworld.errors import TeleworldError


@pytest.mark.parametrize("name", sorted(SCENES))
def test_scene_is_deterministic_under_seed(name):
    a, b = load(name), load(name)
    first_a, first_b = a.reset(3), b.reset(3)
    assert np.array_equal(first_a.frames[a.cameras[0]], first_b.frames[b.cameras[0]])
    action = np.full(a.action_spec.size, 0.5, np.float32)
    for _ in range(5):
        oa, ob = a.step(action), b.step(action)
    assert np.array_equal(oa.qpos, ob.qpos)
    assert not np.array_equal(a.reset(4).qpos, first_a.qpos)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_scene_observation_shapes(name):
    scene = load(name, image_size=(32, 48))
    obs = scene.reset(0)
    for cam in scene.cameras:
        frame = obs.frames[cam]
        assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
        assert frame.std() > 1.0  # a real picture, not a blank buffer
    assert obs.qpos.shape == (scene.model.nq,) and obs.qvel.shape == (scene.model.nv,)
    assert obs.contact_summary.shape == (len(scene.contact_groups),)
    info = scene.info()
    assert "<mujoco" in info["mjcf"] and info["action_spec"]["names"]


def test_push_records_pusher_box_contact_with_force():
    scene = load("push")
    scene.reset(0)
    box = scene.box_xy()
    scene.data.qpos[0:2] = box + np.array([-0.1, 0.0])  # pusher left of the box, then drive right into it
    scene.data.qvel[:] = 0
    touched = []
    for _ in range(30):
        obs = scene.step(np.array([1.0, 0.0]))
        touched.append(obs.contact_summary[0])
    assert any(touched)
    pusher_box = [i for i in range(len(obs.contacts)) if set(obs.contacts.body[i]) == {1, 2}]
    assert scene.box_xy()[0] > box[0] + 0.02  # the box was pushed
    if pusher_box:
        assert obs.contacts.force[pusher_box[0], 0] > 0


def test_action_is_clipped_to_spec_and_float32():
    scene = load("push")
    clipped = scene.action_spec.clip(np.array([5.0, -7.0]))
    assert clipped.dtype == np.float32 and clipped.tolist() == [1.0, -1.0]


def test_state_roundtrip_resimulates_identically():
    scene = load("push")
    scene.reset(1)
    action = np.array([0.7, -0.2])
    for _ in range(3):
        scene.step(action)
    state = scene.get_state()
    after = [scene.step(action).qpos for _ in range(5)]
    scene.set_state(state)
    again = [scene.step(action).qpos for _ in range(5)]
    assert np.array_equal(np.array(after), np.array(again))


def test_unknown_scene_is_a_clear_error():
    with pytest.raises(TeleworldError, match="unknown scene 'nope'; known scenes: arm, arm-joint, cartpole-swingup, gripper, push, reacher-hard"):
        load("nope")


def test_control_rate_override_keeps_sim_time_in_step_with_wall_time():
    scene = load("push", control_rate=50)
    start = scene.reset(0).sim_time
    assert scene.step(np.zeros(2)).sim_time - start == pytest.approx(0.02)
    assert scene.info()["control_rate"] == 50
    with pytest.raises(TeleworldError, match="30 Hz is not a whole number of physics steps"):
        load("push", control_rate=30)
    with pytest.raises(TeleworldError, match=r"control rate must be in \(0, 100\] Hz"):
        load("push", control_rate=200)


def test_reacher_succeeds_exactly_when_the_fingertip_reaches_the_target():
    scene = load("reacher-hard")
    scene.reset(0)
    target = scene.data.geom("target")
    finger = scene.data.geom("finger")
    assert not scene.success() and np.linalg.norm(finger.xpos[:2] - target.xpos[:2]) > scene.model.geom("target").size[0]
    seen = {True: 0, False: 0}
    rng = np.random.default_rng(0)
    for seed in range(10):
        scene.reset(seed)
        for _ in range(60):
            scene.step(rng.uniform(-1, 1, 2))
            reached = np.linalg.norm(finger.xpos[:2] - target.xpos[:2]) <= (
                scene.model.geom("target").size[0] + scene.model.geom("finger").size[0])
            assert scene.success() == reached
            seen[reached] += 1
    assert seen[True] > 0 and seen[False] > 0


def test_a_task_without_a_label_says_none():
    assert load("cartpole-swingup").success() is None


class ReachTheBox(PushTask):
    """The same physics, another task: reward = minus the pusher's distance to the box."""

    def reward(self, physics):
        return -float(np.linalg.norm(physics.pusher_xy() - physics.box_xy()))


class ReachScene(PushScene):
    task_class = ReachTheBox


def test_the_task_not_the_physics_decides_reward_and_the_states_are_the_same():
    push, reach = PushScene(image_size=(16, 16)), ReachScene(image_size=(16, 16))
    a, b = push.reset(3), reach.reset(3)
    np.testing.assert_array_equal(a.qpos, b.qpos)  # the task's draws are the same: same initial state
    assert a.reward == pytest.approx(-push.task.goal_distance(push))
    assert b.reward == pytest.approx(-np.linalg.norm(a.qpos[0:2] - a.qpos[2:4]))
    assert a.reward != pytest.approx(b.reward)


@pytest.mark.parametrize("name", ["push", "reacher-hard", "arm"])
def test_moving_the_goal_moves_what_the_task_scores_and_stays_where_goals_are_drawn(name):
    scene = load(name, image_size=(16, 16))
    scene.reset(0)
    before, distance = scene.goal(), scene.task.goal_distance(scene)
    delta = -np.sign(before) * [0.03, 0.02]  # toward the middle: no clipping
    moved = move_goal(scene, delta)
    np.testing.assert_allclose(moved, before + delta)
    np.testing.assert_allclose(scene.goal(), moved)
    if name != "reacher-hard":  # reacher's distance reads the target's body, updated by the next step
        assert scene.task.goal_distance(scene) != pytest.approx(distance)
    far = move_goal(scene, np.array([5.0, 5.0]))
    assert np.all(far < 0.3)  # clipped to the area the task draws goals in


def test_a_task_without_a_goal_refuses_to_move_it_with_one_line():
    scene = load("cartpole-swingup")
    scene.reset(0)
    with pytest.raises(TeleworldError, match="has no goal to move"):
        move_goal(scene, np.array([0.1, 0.0]))
    assert np.isnan(scene.task.goal_distance(scene))
