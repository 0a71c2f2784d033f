"""The teleop session end to end on a real (dummy-driver) pygame window, real MuJoCo and a real Zarr store."""

import numpy as np
import pygame
import pytest

from recorder import EpisodeStore
from teleop.bindings import load_bindings
from teleop.devices.keyboard import KeyboardDevice
from teleop.devices.replay import ReplayDevice
from teleop.scenes import load
from teleop.session import TeleopSession
from teleworld.errors import TeleworldError

RATE = 50.0  # Hz: fast enough to keep the tests short, slow enough for this machine


def keyboard_session(path, window, **kwargs) -> TeleopSession:
    scene = load("push", control_rate=RATE)
    device = KeyboardDevice(scene.action_spec, load_bindings(None, scene), scene.control_rate)
    device.connect()
    store = EpisodeStore.create(path, scene.info())
    return TeleopSession(scene, device, store, window, **kwargs)


def post(key: int, down: bool = True) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP, key=key))


def press(key: int) -> None:
    post(key)
    post(key, down=False)


def ticks(session: TeleopSession, n: int) -> None:
    for _ in range(n):
        assert session.tick()


def test_posted_keys_drive_the_pusher_and_the_recorded_actions_are_the_applied_ones(tmp_path, window):
    session = keyboard_session(tmp_path / "s.zarr", window)
    press(pygame.K_r)  # start recording
    post(pygame.K_RIGHT)
    ticks(session, 20)
    post(pygame.K_RIGHT, down=False)
    ticks(session, 10)
    press(pygame.K_RETURN)  # save
    session.tick()
    session.close()

    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.num_episodes == 1
    episode = store.episode(0)
    vx, vy = episode["action"][:, 0], episode["action"][:, 1]
    step = 1.0 / (0.25 * RATE)  # default ramp: full scale in 0.25 s
    assert len(vx) == 30 and np.all(vy == 0)
    assert vx[0] == pytest.approx(step)  # ramps up while held...
    assert np.all(np.diff(vx[:20]) >= 0) and np.all(vx[13:20] == 1.0)
    assert np.all(np.diff(vx[20:]) < 0) and vx[-1] == pytest.approx(1.0 - 10 * step)  # ...and down when released
    assert episode["qpos"][-1, 0] > episode["qpos"][0, 0] + 0.05  # the pusher moved right

    # the recorded actions are exactly what the scene applied: re-simulating them reproduces the recorded states
    info = store.episode_info(0)
    assert info["device"] == "keyboard" and "overruns" in info and "jitter_p99_ms" in info
    replay = load("push", control_rate=RATE)
    replay.reset(info["seed"])
    for t in range(len(vx) - 1):
        assert np.array_equal(replay.step(episode["action"][t]).qpos, episode["qpos"][t + 1])


def test_discard_and_rerecord_leave_exactly_the_kept_episodes(tmp_path, window):
    session = keyboard_session(tmp_path / "s.zarr", window)
    press(pygame.K_r)
    ticks(session, 5)
    press(pygame.K_RETURN)  # keep: 5 steps from seed 0, the start shown while idle; seed 1 is shown next
    ticks(session, 2)
    press(pygame.K_r)
    ticks(session, 120)  # longer than a chunk: discarding must drop flushed steps too
    press(pygame.K_BACKSPACE)  # discard (seed 1): back to the same start
    ticks(session, 2)
    press(pygame.K_r)
    ticks(session, 7)
    press(pygame.K_y)  # re-record the open episode: drop these 7 steps, start again from seed 1
    ticks(session, 4)
    press(pygame.K_r)  # stop and save: 4 steps
    ticks(session, 2)
    press(pygame.K_y)  # re-record the episode just saved: it is marked deleted, seed 1 again
    ticks(session, 6)
    press(pygame.K_r)
    session.tick()
    session.close()

    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.data_length() == store.num_steps == 15 and store.uncommitted_steps() == 0
    assert store.active_episodes().tolist() == [0, 2]  # episode 1 (the first 4-step take) was replaced
    kept = [store.episode_info(i) for i in store.active_episodes()]
    assert [(i["length"], i["seed"]) for i in kept] == [(5, 0), (6, 1)]
    first = load("push").reset(1)
    assert np.array_equal(store.episode(2)["qpos"][0], first.qpos)  # re-recorded from the same start
    assert len(session.saved) == 2


@pytest.mark.parametrize("answer, kept", [(pygame.K_BACKSPACE, 2), (pygame.K_RETURN, 3)])
def test_closing_the_window_mid_episode_asks_and_loses_no_saved_episode(tmp_path, window, answer, kept):
    session = keyboard_session(tmp_path / "s.zarr", window)
    for length in (6, 8):
        press(pygame.K_r)
        ticks(session, length)
        press(pygame.K_r)
    press(pygame.K_r)
    post(pygame.K_UP)
    ticks(session, 5)
    pygame.event.post(pygame.event.Event(pygame.QUIT))  # the window's close button
    ticks(session, 3)
    assert session.asking and session.steps == 5  # the robot waits for the answer; nothing is dropped
    press(answer)
    assert not session.tick()
    session.close()

    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.num_episodes == kept and store.uncommitted_steps() == 0
    assert [store.episode_info(i)["length"] for i in range(kept)] == [6, 8, 5][:kept]


def test_quit_policy_save_keeps_the_open_episode_without_asking(tmp_path, window):
    session = keyboard_session(tmp_path / "s.zarr", window, on_quit="save")
    press(pygame.K_r)
    ticks(session, 4)
    press(pygame.K_ESCAPE)
    assert not session.tick()
    session.close()
    assert EpisodeStore.open(tmp_path / "s.zarr").num_episodes == 1


def test_reset_is_refused_while_recording_and_pause_freezes(tmp_path, window):
    session = keyboard_session(tmp_path / "s.zarr", window, help_lines=("record: r",))
    press(pygame.K_r)
    ticks(session, 3)
    press(pygame.K_TAB)  # reset: refused, the episode stays open
    press(pygame.K_SPACE)  # pause
    ticks(session, 5)
    assert session.recording and session.steps == 3 and "save or discard" in session.messages[-1]
    press(pygame.K_SPACE)
    ticks(session, 2)
    assert session.steps == 5
    assert session.hud().overlay == []
    press(pygame.K_h)
    session.tick()
    assert session.hud().overlay == ["record: r"]
    session.close()  # interrupted with an episode open: kept (on_quit is "ask", not "discard")
    assert EpisodeStore.open(tmp_path / "s.zarr").episode_info(0)["length"] == 6


def test_replay_device_re_records_an_episode_exactly(tmp_path, window):
    session = keyboard_session(tmp_path / "a.zarr", window)
    press(pygame.K_r)
    post(pygame.K_LEFT)
    post(pygame.K_UP)
    ticks(session, 15)
    press(pygame.K_r)
    session.tick()
    session.close()
    source = EpisodeStore.open(tmp_path / "a.zarr")

    scene = load("push", control_rate=RATE)
    with pytest.raises(TeleworldError, match="recorded at 50 Hz"):
        ReplayDevice(scene.action_spec, source, episode=0, control_rate=20.0)
    device = ReplayDevice(scene.action_spec, source, episode=0, control_rate=scene.control_rate)
    store = EpisodeStore.create(tmp_path / "b.zarr", scene.info())
    keyboard = KeyboardDevice(scene.action_spec, load_bindings(None, scene), scene.control_rate)
    keyboard.connect()  # issues the commands
    replay = TeleopSession(scene, device, store, window, command_devices=(keyboard,), seed=10)
    press(pygame.K_r)
    ticks(replay, 20)  # the replay ends after 15 steps and the episode is saved by itself
    replay.close()

    copy, original = EpisodeStore.open(tmp_path / "b.zarr").episode(0), source.episode(0)
    assert np.array_equal(copy["action"], original["action"])
    assert np.array_equal(copy["qpos"], original["qpos"])


def test_the_start_shown_while_idle_is_the_one_recorded(tmp_path, window):
    session = keyboard_session(tmp_path / "s.zarr", window)
    idle_seed, idle_qpos = session.episode_seed, session.obs.qpos.copy()
    post(pygame.K_RIGHT)
    ticks(session, 10)  # practice while idle: the pusher moves, nothing is recorded
    post(pygame.K_RIGHT, down=False)
    assert not np.array_equal(session.obs.qpos, idle_qpos) and not session.recording
    press(pygame.K_r)
    ticks(session, 3)
    press(pygame.K_r)  # save: the next start is drawn and shown
    session.tick()
    shown_next = session.episode_seed
    assert "seed " + str(shown_next) in " ".join(session.hud().lines)
    press(pygame.K_r)
    ticks(session, 3)
    press(pygame.K_r)
    session.tick()
    session.close()

    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert [store.episode_info(i)["seed"] for i in range(2)] == [idle_seed, shown_next] and shown_next != idle_seed
    assert np.array_equal(store.episode(0)["qpos"][0], idle_qpos)  # recorded from the start shown, not seed + 1
    assert np.array_equal(store.episode(1)["qpos"][0], load("push", control_rate=RATE).reset(shown_next).qpos)


def rec_line(session: TeleopSession) -> str:
    return next(line for line in session.hud().lines if line.startswith("REC"))


def test_the_rec_clock_stops_while_paused_and_while_the_quit_prompt_waits(tmp_path, window):
    session = keyboard_session(tmp_path / "s.zarr", window)
    press(pygame.K_r)
    ticks(session, 5)
    press(pygame.K_SPACE)  # pause
    session.tick()
    paused_at, shown = session.rec_seconds, rec_line(session)
    ticks(session, 15)  # 0.3 s paused
    assert session.rec_seconds == paused_at and rec_line(session) == shown
    press(pygame.K_SPACE)
    ticks(session, 5)
    assert session.rec_seconds > paused_at
    press(pygame.K_ESCAPE)  # the quit prompt: the clock waits too
    session.tick()
    asked_at = session.rec_seconds
    ticks(session, 15)
    assert session.asking and session.rec_seconds == asked_at
    session.close()


def test_the_quit_prompt_names_its_keys(tmp_path, window):
    from teleop.operate import DeviceKind, command_keys

    scene_keys = command_keys(load_bindings(None, load("push")), DeviceKind.keyboard)
    session = keyboard_session(tmp_path / "s.zarr", window, command_keys=scene_keys)
    press(pygame.K_r)
    ticks(session, 2)
    press(pygame.K_ESCAPE)
    session.tick()
    prompt = " ".join(session.hud().alerts)
    assert "return: save" in prompt and "backspace: discard" in prompt and "escape: keep driving" in prompt
    session.close()


def test_the_live_view_is_rendered_at_the_window_resolution(tmp_path, window):
    session = keyboard_session(tmp_path / "s.zarr", window)
    session.tick()
    shown = pygame.surfarray.array3d(pygame.display.get_surface())[:128, :128].swapaxes(0, 1)
    sharp = session.scene.render(session.scene.cameras[0], (128, 128))
    recorded = session.obs.frames[session.scene.cameras[0]]
    assert recorded.shape == (64, 64, 3)  # what is recorded keeps the scene's image size
    assert np.array_equal(shown, sharp)  # what is shown is rendered at the window's 128 px
    assert not np.array_equal(shown, recorded.repeat(2, axis=0).repeat(2, axis=1))  # not the 64 px scaled up
    session.close()
