"""Contacts as events: onsets and releases matched within ±2 steps, per contact group, against hand-built sequences;
the from-step-5 means; replay's metrics.json, CSV and report with them; and dream's contact lights."""

import json

import numpy as np
import pygame
import pytest
import torch

from recorder import EpisodeStore
from replay import metrics as M
from replay.dream import dream_loop, open_dream
from replay.evaluate import evaluate
from replay.rollout import WindowBatch
from replay.scores import METRICS, concat_scores, contact_scores, score_batch, summarise, summarise_contacts
from replay.screen import LIGHT_MISMATCH, LIGHT_OFF, LIGHT_ON, LIGHT_RADIUS, init_display, light_centre, panels_size
from teleop.bindings import default_bindings
from teleop.devices.keyboard import KeyboardDevice
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train

K, H = 3, 12


def onsets(steps, length=H):
    flags = np.zeros(length, bool)
    flags[list(steps)] = True
    return flags


def test_events_are_the_steps_a_group_starts_and_stops_touching():
    flags = np.array([[0, 1], [1, 1], [1, 0], [0, 0], [1, 0]], bool)  # (H=5, G=2)
    on, off = M.contact_events(flags, before=np.array([0, 1], bool))
    assert np.flatnonzero(on[:, 0]).tolist() == [1, 4] and np.flatnonzero(off[:, 0]).tolist() == [3]
    assert not on[:, 1].any() and np.flatnonzero(off[:, 1]).tolist() == [2]  # touching before the first step
    held = np.ones((5, 2), bool)  # what copy-last predicts after a touching context: no event at all
    assert not any(e.any() for e in M.contact_events(held, np.ones(2, bool)))


def test_event_matching_is_one_to_one_within_two_steps():
    def count(pred, true):
        return M.event_counts(onsets(pred)[:, None], onsets(true)[:, None]).sum((0, 1)).tolist()

    assert count([5], [5]) == [1, 0, 0]
    assert count([3], [5]) == [1, 0, 0] and count([7], [5]) == [1, 0, 0]  # ±2 steps count
    assert count([2], [5]) == [0, 1, 1] and count([8], [5]) == [0, 1, 1]  # 3 steps off: a miss and a false alarm
    assert count([4, 6], [5]) == [1, 1, 0]  # two predictions, one true event: one of them is a false alarm
    assert count([5], [4, 6]) == [1, 0, 1]
    assert count([3, 6], [1, 4]) == [2, 0, 0]  # matched in order: 1-3 and 4-6
    assert count([], [1, 9]) == [0, 0, 2] and count([0, 11], []) == [0, 2, 0]
    # where counts land: a hit and a miss at the true step, a false alarm at the predicted step
    per_step = M.event_counts(onsets([1, 9])[:, None], onsets([3])[:, None])[:, 0]
    assert per_step[3].tolist() == [1, 0, 0] and per_step[9].tolist() == [0, 1, 0] and per_step.sum() == 2


def batch_of(truth_contact: np.ndarray, preds: dict[str, np.ndarray]) -> WindowBatch:
    """A WindowBatch over truth contacts (W, K + H, G); predictions (W, H, G) of the imagined steps."""
    w, t, _ = truth_contact.shape
    truth = {"image": np.zeros((w, t, 3, 4, 4), np.float32), "contact": truth_contact.astype(np.float32)}
    return WindowBatch(np.arange(w), K, truth, {m: {"contact": p.astype(np.float32)} for m, p in preds.items()},
                       np.zeros((w, K, 3, 4, 4), np.float32))


def scripted_contacts(windows: int = 6, seed: int = 0) -> np.ndarray:
    """(W, K + H, 2): group 0 touches for a few steps in every window (onset and release inside the horizon),
    group 1 touches throughout except a short break."""
    rng = np.random.default_rng(seed)
    c = np.zeros((windows, K + H, 2), bool)
    for w in range(windows):
        start = K + rng.integers(0, 4)
        c[w, start : start + rng.integers(2, 5), 0] = True
        c[w, :, 1] = True
        gap = K + rng.integers(4, 7)
        c[w, gap : gap + 2, 1] = False
    return c


def test_copy_last_scores_onset_f1_zero_and_a_perfect_predictor_one():
    truth = scripted_contacts()
    imagined = truth[:, K:]
    shift = lambda n: np.concatenate([np.repeat(truth[:, K - 1 : K], n, 1), imagined[:, :-n]], 1)  # noqa: E731
    preds = {"copy_last": np.repeat(truth[:, K - 1 : K], H, 1), "model": imagined, "shuffled_actions": shift(2),
             "reconstruction": shift(3), "always_on": np.ones_like(imagined)}
    b = batch_of(truth, preds)
    contacts = contact_scores(b)
    scores = score_batch(b, contacts)
    summary = summarise(scores)
    onset, release, state = (summary["mean"][n] for n in ("contact_onset_f1", "contact_release_f1", "contact_f1"))
    assert onset["copy_last"] == 0.0 and release["copy_last"] == 0.0  # holding the context's contacts: no event
    assert onset["model"] == 1.0 and release["model"] == 1.0 and state["model"] == 1.0
    assert onset["shuffled_actions"] == 1.0 and release["shuffled_actions"] == 1.0  # 2 steps late: within tolerance
    assert onset["reconstruction"] < 0.5 and release["reconstruction"] < 0.5  # 3 steps late: mostly missed
    assert state["always_on"] < 1.0 and release["always_on"] == 0.0  # on throughout: right often, never releases
    assert summary["mean_ci"]["contact_onset_f1"]["copy_last"] == [0.0, 0.0]
    low, high = summary["mean_ci"]["contact_onset_f1"]["reconstruction"]
    assert low <= onset["reconstruction"] <= high
    # per group: precision, recall and F1 with intervals, and the counts behind them
    groups = summarise_contacts(concat_scores([contacts]), ["pusher/box", "box/world"])
    copy = groups["horizon"]["onset"]["pusher/box"]["copy_last"]
    assert copy["predicted"] == 0 and copy["true"] == 6 and copy["f1"] == 0.0 and copy["precision"] is None
    perfect = groups["horizon"]["onset"]["box/world"]["model"]
    assert perfect["true"] == 6 and perfect["f1"] == 1.0 and perfect["f1_ci"] == [1.0, 1.0]
    assert groups["horizon"]["release"]["box/world"]["model"]["true"] == 6  # every break ends inside the horizon
    always = groups["horizon"]["contact"]
    assert always["box/world"]["always_on"]["recall"] == 1.0 and always["box/world"]["always_on"]["precision"] < 1
    assert always["pusher/box"]["always_on"]["f1"] < always["box/world"]["always_on"]["f1"]
    late = groups["horizon"]["onset"]["pusher/box"]["reconstruction"]
    assert late["f1"] == 0.0 and late["f1_ci"] == [0.0, 0.0]  # 3 steps late on every window


def test_means_from_step_five_use_only_those_steps():
    rng = np.random.default_rng(0)
    rmse = rng.uniform(size=(10, H))
    counts = rng.integers(0, 3, size=(10, H, 3))
    summary = summarise({"proprio_rmse": {"model": rmse}, "contact_f1": {"model": counts}})
    assert summary["from_step"] == 5
    assert summary["mean_from_step"]["proprio_rmse"]["model"] == pytest.approx(rmse[:, 4:].mean(), abs=1e-5)
    assert summary["mean"]["proprio_rmse"]["model"] == pytest.approx(rmse.mean(), abs=1e-5)
    tail = counts[:, 4:].sum((0, 1))
    assert summary["mean_from_step"]["contact_f1"]["model"] == pytest.approx(M.f1(tail), abs=1e-5)
    low, high = summary["mean_from_step_ci"]["proprio_rmse"]["model"]
    assert low < summary["mean_from_step"]["proprio_rmse"]["model"] < high
    short = summarise({"proprio_rmse": {"model": rmse[:, :3]}})  # a horizon shorter than 5 steps: no such mean
    assert short["mean_from_step"]["proprio_rmse"]["model"] is None


@pytest.fixture(scope="module")
def run(push_store, tmp_path_factory) -> str:
    store = EpisodeStore.open(push_store)
    data = EpisodeArrays(store, DataSpec.from_store(store))
    return train(data, make_config("tiny", steps=3), tmp_path_factory.mktemp("run"), show_progress=False)["checkpoint"]


def test_replay_reports_contact_events_per_group_and_from_step_five(run, push_store, tmp_path):
    metrics = evaluate(run, push_store, tmp_path, context=K, horizon=H, windows=6, seed=1, episodes="all",
                       show_progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    events = saved["contact_events"]
    assert events["groups"] == ["pusher/box", "box/world"] and events["tolerance_steps"] == 2
    saved_cuts = torch.load(run, weights_only=True)["contact_thresholds"]  # chosen at the end of training
    assert list(events["thresholds"].values()) == pytest.approx(saved_cuts) and len(saved_cuts) == 2
    assert all(0.05 <= t <= 0.95 for t in saved_cuts)
    for span in ("horizon", "from_step"):
        for kind in ("contact", "onset", "release"):
            for group in events["groups"]:
                by_method = events[span][kind][group]
                assert set(by_method) >= {"model", "copy_last", "shuffled_actions", "reconstruction"}
                assert len({stats["true"] for stats in by_method.values()}) == 1  # the same truth for every method
                if kind != "contact":
                    assert by_method["copy_last"]["predicted"] == 0
    for name in ("proprio_rmse", "contact_f1", "contact_onset_f1", "contact_release_f1"):
        assert set(saved["mean_from_step"][name]) >= {"model", "copy_last", "reconstruction"}
        assert (tmp_path / f"{name}.png").exists()
    rmse = np.array(saved["per_step"]["proprio_rmse"]["model"])
    assert saved["mean_from_step"]["proprio_rmse"]["model"] == pytest.approx(rmse[4:].mean(), abs=1e-4)
    assert metrics["mean_from_step"] == saved["mean_from_step"]
    rows = (tmp_path / "metrics.csv").read_text()
    assert "contact_onset_f1,copy_last,1," in rows and "contact_release_f1,model," in rows
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Contact events</h2>" in page and "pusher/box onset, from step 5" in page
    assert "<h2>From imagined step 5 on</h2>" in page
    assert page.count("src='data:image/png;base64,") == len(METRICS)


def test_dream_shows_real_and_predicted_contact_lights_side_by_side(run):
    dream = open_dream(run, "push")
    screen = init_display(panels_size(64, 2, 3), "test dream contacts")
    keyboard = KeyboardDevice(dream.scene.action_spec, default_bindings(dream.scene), dream.scene.control_rate)
    try:
        keyboard.connect()
        assert dream_loop(dream, screen, 2, keyboard, paced=False, max_steps=2) == 2
        names, real, predicted = dream.contact_lights()
        assert names == ["pusher/box", "box/world"] and real.shape == predicted.shape == (2,)
        assert np.array_equal(real, dream.obs.contact_summary.astype(bool))

        def colour(panel, index, dx=0):
            x, y = light_centre(panel, index, 64, 2)
            return tuple(screen.get_at((x + dx, y)))[:3]

        for i in range(2):
            assert colour(0, i) == (LIGHT_ON if real[i] else LIGHT_OFF)
            assert colour(1, i) == (LIGHT_ON if predicted[i] else LIGHT_OFF)
            ring = colour(1, i, LIGHT_RADIUS + 1)
            assert (ring == LIGHT_MISMATCH) == (real[i] != predicted[i])
        # the model's head says the opposite of the scene: every predicted light flips and is ringed red
        original = dream._shown

        def opposite(out):
            frame = original(out)
            dream.pred_contact = ~dream.obs.contact_summary.astype(bool)
            return frame

        dream._shown = opposite
        assert dream_loop(dream, screen, 2, keyboard, paced=False, max_steps=1) == 1
        real = dream.contact_lights()[1]
        for i in range(2):
            assert colour(1, i) == (LIGHT_OFF if real[i] else LIGHT_ON)
            assert colour(1, i, LIGHT_RADIUS + 1) == LIGHT_MISMATCH
            assert colour(0, i, LIGHT_RADIUS + 1) != LIGHT_MISMATCH  # the real panel is never ringed
    finally:
        keyboard.disconnect()
        dream.scene.close()
        pygame.quit()


def test_contact_thresholds_are_those_with_the_best_f1():
    from train.calibration import best_thresholds

    rng = np.random.default_rng(0)
    truth = rng.random((8, 20, 2)) < 0.1  # rare contact, as the pusher touching the box
    probability = np.where(truth, 0.3, 0.12)  # the head is right but never confident
    probability[..., 1] = np.where(truth[..., 1], 0.9, 0.6)
    chosen = best_thresholds(probability, truth)
    assert chosen[0] == pytest.approx(0.15) and chosen[1] == pytest.approx(0.6)  # a cut between the two levels
    assert np.array_equal(probability[..., 0] > chosen[0], truth[..., 0])
    assert not (probability[..., 0] > 0.5).any()  # 0.5 would call no contact at all
