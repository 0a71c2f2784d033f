"""Replay metrics against hand-computed values on small arrays."""

import numpy as np
import pytest

from replay import metrics as M
from replay.rollout import shuffle_actions
from replay.scores import FLOOR_METHOD, action_sensitivity, overall, per_step, summarise_positions


def frames(value: float, shape=(2, 3, 16, 16)) -> np.ndarray:
    return np.full(shape, value, np.float32)


def test_psnr_hand_values_and_cap():
    truth = frames(0.5)
    assert np.allclose(M.psnr(truth + 0.1, truth), 20.0, atol=1e-4)  # mse 0.01 -> 20 dB
    assert np.allclose(M.psnr(truth + 0.01, truth), 40.0, atol=1e-3)
    assert np.all(M.psnr(truth, truth) == M.PSNR_CAP)  # identical frames: capped, not inf
    assert np.allclose(M.psnr(frames(1.5), frames(1.0)), M.PSNR_CAP)  # predictions are clipped to [0, 1]


def test_ssim_identical_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(3, 3, 32, 32)).astype(np.float32)
    assert M.ssim(truth, truth).shape == (3,)
    assert np.allclose(M.ssim(truth, truth), 1.0, atol=1e-5)
    noisy = np.clip(truth + rng.normal(0, 0.2, truth.shape), 0, 1).astype(np.float32)
    assert np.all(M.ssim(noisy, truth) < 0.9)


def test_moved_pixel_psnr_scores_only_moved_pixels():
    reference = frames(0.0, (3, 8, 8))
    truth = reference.copy()
    truth[:, 2:4, 2:4] = 1.0  # 4 pixels moved
    mask = M.moved_mask(truth, reference)
    assert mask.sum() == 4
    copy_last = reference  # wrong on exactly the moved pixels: mse 1 there -> 0 dB
    assert M.masked_psnr(copy_last, truth, mask) == pytest.approx(0.0)
    assert M.psnr(copy_last, truth) == pytest.approx(-10 * np.log10(4 / 64))  # whole frame looks far better
    half = truth.copy()
    half[:, 2:4, 2:4] = 0.5  # mse 0.25 on the moved pixels -> 6.02 dB
    assert M.masked_psnr(half, truth, mask) == pytest.approx(10 * np.log10(4), abs=1e-4)
    assert np.isnan(M.masked_psnr(truth, reference, np.zeros((8, 8), bool)))  # nothing moved: undefined


def test_rmse_and_contact_f1_by_hand():
    assert M.rmse(np.array([[3.0, 0.0]]), np.array([[0.0, 4.0]]))[0] == pytest.approx(np.sqrt(12.5))
    pred = np.array([[1, 0, 1, 0]])
    truth = np.array([[1, 1, 0, 0]])
    counts = M.contact_counts(pred, truth)
    assert counts.tolist() == [[1, 1, 1]]  # tp, fp, fn
    assert M.f1(counts)[0] == pytest.approx(0.5)
    assert np.isnan(M.f1(M.contact_counts(np.zeros((1, 2)), np.zeros((1, 2))))[0])
    # pooled over windows: window A tp=1, window B fn=1 -> F1 = 2/3, not the mean of per-window F1s
    pooled = np.array([[[1, 0, 0]], [[0, 0, 1]]])
    assert per_step(pooled, pooled=True)[0] == pytest.approx(2 / 3)


def test_bootstrap_interval_brackets_the_mean_and_collapses_on_constant_data():
    rng = np.random.default_rng(1)
    values = rng.normal(10.0, 1.0, size=(40, 5))
    low, high = M.bootstrap_ci(values, lambda v, axis: M.nanmean(v, axis))
    mean = values.mean(0)
    assert np.all(low < mean) and np.all(mean < high)
    assert np.all(high - low < 1.5)  # about 2 * 1.96 / sqrt(40) = 0.62 wide
    low, high = M.bootstrap_ci(np.full((10, 3), 7.0), lambda v, axis: M.nanmean(v, axis))
    assert np.allclose(low, 7.0) and np.allclose(high, 7.0)
    assert overall(np.array([[1.0, np.nan], [3.0, 5.0]]), pooled=False) == pytest.approx(3.5)  # (2 + 5) / 2


def test_shuffled_actions_keep_context_and_permute_the_imagined_part():
    actions = np.arange(3 * 8 * 2, dtype=np.float32).reshape(3, 8, 2)
    out = shuffle_actions(actions, context=3, seed=0)
    assert np.array_equal(out[:, :2], actions[:, :2])  # actions between context frames stay real
    assert np.array_equal(out[:, -1], actions[:, -1])  # never applied
    part, shuffled = actions[:, 2:-1].reshape(-1, 2), out[:, 2:-1].reshape(-1, 2)
    assert sorted(map(tuple, part)) == sorted(map(tuple, shuffled)) and not np.array_equal(part, shuffled)


def test_action_verdict_both_ways():
    rng = np.random.default_rng(2)
    model = rng.normal(25.0, 1.0, size=(20, 10))
    listens = action_sensitivity({"psnr": {"model": model, "shuffled_actions": model - 2.0}})
    assert listens["delta_psnr_db"] == pytest.approx(2.0) and not listens["ignores_actions"]
    assert listens["verdict"].startswith("The model uses its actions: ")
    weak = action_sensitivity({"psnr": {"model": model, "shuffled_actions": model - 0.5}})
    assert not weak["ignores_actions"] and weak["verdict"].startswith("The model uses its actions only weakly")
    deaf = action_sensitivity({"psnr": {"model": model, "shuffled_actions": model.copy()}})
    assert deaf["delta_psnr_db"] == 0.0 and deaf["ignores_actions"]
    assert "ignores its actions" in deaf["verdict"]


def test_position_error_by_hand_per_body_band_and_floor():
    assert M.distance_cm(np.array([0.03, 0.04, 0.0]), np.zeros(3)) == pytest.approx(5.0)  # 5 cm
    steps = np.arange(1, 13, dtype=float)  # H = 12 imagined steps, 4 windows, 2 bodies
    errors = {"copy_last": np.broadcast_to(np.stack([steps, 2 * steps], -1), (4, 12, 2)).copy(),
              FLOOR_METHOD: np.full((4, 12, 2), 0.5)}
    out = summarise_positions(errors, ["box", "pusher"])
    assert out["bands"]["box"]["1-9"]["copy_last"]["mean"] == pytest.approx(5.0)  # mean of 1..9
    assert out["bands"]["box"]["10-12"]["copy_last"]["mean"] == pytest.approx(11.0)
    assert out["bands"]["pusher"]["10-12"]["copy_last"]["mean"] == pytest.approx(22.0)
    assert out["bands"]["all"]["1-9"]["copy_last"]["mean"] == pytest.approx(7.5)  # (5 + 10) / 2
    assert out["bands"]["box"]["10-12"]["copy_last"]["ci"] == [pytest.approx(11.0)] * 2  # equal windows
    assert out["floor"] == {"box": 0.5, "pusher": 0.5, "all": 0.5}
    assert out["per_body"]["pusher"]["per_step"]["copy_last"] == pytest.approx(list(2 * steps))
    short = summarise_positions({m: v[:, :6] for m, v in errors.items()}, ["box", "pusher"])
    assert list(short["bands"]["box"]) == ["1-6"]  # the later band needs steps beyond the horizon

