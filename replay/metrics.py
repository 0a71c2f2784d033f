"""Pure metric functions on numpy arrays, and bootstrap confidence intervals over windows.

Images are (..., 3, S, S) in [0, 1]. PSNR uses data range 1 and is capped at ``PSNR_CAP`` for identical frames
(instead of infinity). Undefined values (no moved pixels, no contact in truth or prediction) are NaN and are left
out of averages.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from pytorch_msssim import ssim as _ssim

PSNR_CAP = 60.0  # dB reported for (near-)identical frames, instead of infinity
MOVED_THRESHOLD = 0.1  # a pixel moved when some channel differs from the last context frame by more than this
EVENT_TOLERANCE = 2  # steps: a predicted contact onset or release counts when this close to a true one


def _psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.minimum(-10.0 * np.log10(mse), PSNR_CAP)


def psnr(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR per frame over the last three axes; images in [0, 1], capped at PSNR_CAP."""
    return _psnr_from_mse(np.mean((np.clip(pred, 0, 1) - truth) ** 2, axis=(-3, -2, -1)))


def moved_mask(truth: np.ndarray, reference: np.ndarray, threshold: float = MOVED_THRESHOLD) -> np.ndarray:
    """(..., S, S) True where a true frame differs from ``reference`` (the last context frame) in some channel."""
    return np.abs(truth - reference).max(axis=-3) > threshold


def masked_psnr(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """PSNR per frame on the pixels where ``mask`` (..., S, S) is True; NaN for frames with no such pixel."""
    sq = ((np.clip(pred, 0, 1) - truth) ** 2).mean(axis=-3)  # (..., S, S), mean over channels
    count = mask.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = (sq * mask).sum(axis=(-2, -1)) / count
    return np.where(count > 0, _psnr_from_mse(mse), np.nan)


def ssim(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """SSIM per frame (pytorch-msssim, Gaussian window 11, sigma 1.5, data range 1); identical frames give 1."""
    lead = pred.shape[:-3]
    x = torch.from_numpy(np.clip(pred, 0, 1).reshape(-1, *pred.shape[-3:])).float()
    y = torch.from_numpy(np.asarray(truth).reshape(-1, *truth.shape[-3:])).float()
    with warnings.catch_warnings():  # frames smaller than the window only get a warning
        warnings.simplefilter("ignore")
        return _ssim(x, y, data_range=1.0, size_average=False).numpy().reshape(lead)


def rmse(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Root mean squared error over the last axis."""
    return np.sqrt(np.mean((pred - truth) ** 2, axis=-1))


def distance_cm(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(..., 3) positions in metres -> (...) Euclidean distance in cm."""
    return 100.0 * np.linalg.norm(np.asarray(pred) - truth, axis=-1)


def contact_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(..., 3) true positives, false positives, false negatives over the last axis (contact groups)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    return np.stack([(pred & truth).sum(-1), (pred & ~truth).sum(-1), (~pred & truth).sum(-1)], -1)


def contact_counts_per_group(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(..., G, 3) true positive, false positive, false negative flags per contact group (the last axis)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    return np.stack([pred & truth, pred & ~truth, ~pred & truth], -1).astype(np.int64)


def contact_events(flags: np.ndarray, before: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(onsets, releases), each (..., H, G) bool, of contact flags (..., H, G) over H steps; ``before`` (..., G) are
    the flags of the step before the first (for replay: the last context step, known to every method). An onset is
    a step whose group touches and did not the step before; a release the reverse. Flags held constant (copy-last)
    have neither."""
    flags, before = np.asarray(flags, bool), np.asarray(before, bool)
    previous = np.concatenate([before[..., None, :], flags[..., :-1, :]], -2)
    return flags & ~previous, ~flags & previous


def event_counts(pred: np.ndarray, truth: np.ndarray, tolerance: int = EVENT_TOLERANCE) -> np.ndarray:
    """Events (..., H, G) bool matched one to one within ``tolerance`` steps -> (..., H, G, 3) counts: a true
    positive and a missed event (false negative) at the true event's step, a false positive at the predicted one.

    Per sequence the events are matched in time order, each true event taking the earliest unmatched predicted one
    within the tolerance (on a line with equal windows this greedy matching is a maximum one)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    steps, groups = pred.shape[-2:]
    p = np.moveaxis(pred.reshape(-1, steps, groups), -1, 1).reshape(-1, steps)  # (sequences, H)
    t = np.moveaxis(truth.reshape(-1, steps, groups), -1, 1).reshape(-1, steps)
    out = np.zeros((len(p), steps, 3), np.int64)
    for n in np.flatnonzero(p.any(1) | t.any(1)):
        ps, ts = np.flatnonzero(p[n]), np.flatnonzero(t[n])
        i = j = 0
        while i < len(ts) and j < len(ps):
            if ps[j] < ts[i] - tolerance:  # too early for this true event and every later one
                out[n, ps[j], 1] += 1
                j += 1
            elif ps[j] > ts[i] + tolerance:  # nothing predicted near this true event
                out[n, ts[i], 2] += 1
                i += 1
            else:
                out[n, ts[i], 0] += 1
                i, j = i + 1, j + 1
        np.add.at(out[n, :, 1], ps[j:], 1)
        np.add.at(out[n, :, 2], ts[i:], 1)
    out = np.moveaxis(out.reshape(-1, groups, steps, 3), 1, 2)
    return out.reshape(*pred.shape, 3)


def precision(counts: np.ndarray) -> np.ndarray:
    """tp / (tp + fp) from (..., 3) counts; NaN where nothing was predicted."""
    tp, fp = counts[..., 0].astype(float), counts[..., 1].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fp > 0, tp / (tp + fp), np.nan)


def recall(counts: np.ndarray) -> np.ndarray:
    """tp / (tp + fn) from (..., 3) counts; NaN where nothing happened."""
    tp, fn = counts[..., 0].astype(float), counts[..., 2].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, tp / (tp + fn), np.nan)


def f1(counts: np.ndarray) -> np.ndarray:
    """F1 from (..., 3) counts; NaN where there is neither a true nor a predicted contact."""
    tp, fp, fn = (counts[..., i].astype(float) for i in range(3))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def nanmean(values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray, int], np.ndarray], resamples: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap over the first axis (windows) of ``values``: (low, high) of ``statistic``.

    ``statistic(v, axis)`` reduces the windows axis ``axis`` of ``v``; it is applied at once to ``resamples``
    draws of the windows with replacement, stacked along a new first axis.
    """
    n = len(values)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    stats = statistic(values[idx], 1)
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(stats, [alpha, 1 - alpha], axis=0)
    return low, high
