"""Per-window, per-step scores of every method, and their summaries with bootstrap intervals over windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replay import metrics as M
from replay.rollout import WindowBatch

ACTION_DB_THRESHOLD = 0.1  # ΔPSNR (dB) below which, or with a 95 % interval reaching 0, the model ignores actions
WEAK_ACTION_DB = 1.0  # ΔPSNR (dB) below which its use of actions is called weak


@dataclass(frozen=True)
class Metric:
    """How a metric is shown and aggregated. Pooled metrics hold (tp, fp, fn) counts and are aggregated as F1."""

    label: str
    unit: str
    higher_is_better: bool
    pooled: bool = False


METRICS: dict[str, Metric] = {
    "psnr": Metric("PSNR", "dB", True),
    "ssim": Metric("SSIM", "", True),
    "moved_psnr": Metric("PSNR on moved pixels", "dB", True),
    "proprio_rmse": Metric("proprio RMSE", "native units", False),
    "contact_f1": Metric("contact F1", "", True, pooled=True),
}


def score_batch(b: WindowBatch) -> dict[str, dict[str, np.ndarray]]:
    """metric -> method -> (B, H) values, or (B, H, 3) contact counts, for the imagined steps."""
    k = b.context
    truth_img = b.truth["image"][:, k:]
    mask = M.moved_mask(truth_img, b.truth["image"][:, k - 1 : k])
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in METRICS}
    for method, pred in b.preds.items():
        if "image" in pred:
            out["psnr"][method] = M.psnr(pred["image"], truth_img)
            out["ssim"][method] = M.ssim(pred["image"], truth_img)
            out["moved_psnr"][method] = M.masked_psnr(pred["image"], truth_img, mask)
        if "proprio" in pred:
            out["proprio_rmse"][method] = M.rmse(pred["proprio"], b.truth["proprio"][:, k:])
        if "contact" in pred:
            out["contact_f1"][method] = M.contact_counts(pred["contact"], b.truth["contact"][:, k:] > 0.5)
    return {name: by_method for name, by_method in out.items() if by_method}


def concat_scores(parts: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Join the scores of several batches along the window axis."""
    return {m: {meth: np.concatenate([p[m][meth] for p in parts]) for meth in parts[0][m]} for m in parts[0]}


def per_step(values: np.ndarray, pooled: bool, axis: int = 0) -> np.ndarray:
    """(..., W, H[, 3]) with windows on ``axis`` -> (..., H): mean over windows, or F1 of pooled counts."""
    return M.f1(values.sum(axis)) if pooled else M.nanmean(values, axis)


def overall(values: np.ndarray, pooled: bool, axis: int = 0) -> np.ndarray:
    """(..., W, H[, 3]) -> (...): the whole horizon (mean of the per-step values, or F1 of all counts)."""
    if pooled:
        return M.f1(values.sum((axis, axis + 1)))
    return M.nanmean(per_step(values, False, axis), axis)


def summarise(scores: dict[str, dict[str, np.ndarray]], seed: int = 0) -> dict:
    """Per-step values, means over the horizon and their 95 % bootstrap intervals for every metric and method."""
    out: dict = {"per_step": {}, "ci": {}, "mean": {}, "mean_ci": {}}
    for name, by_method in scores.items():
        pooled = METRICS[name].pooled
        for key in out:
            out[key][name] = {}
        for method, values in by_method.items():
            low, high = M.bootstrap_ci(values, lambda v, a: per_step(v, pooled, a), seed=seed)
            out["per_step"][name][method] = _floats(per_step(values, pooled))
            out["ci"][name][method] = {"low": _floats(low), "high": _floats(high)}
            out["mean"][name][method] = _float(overall(values, pooled))
            mlow, mhigh = M.bootstrap_ci(values, lambda v, a: overall(v, pooled, a), seed=seed)
            out["mean_ci"][name][method] = [_float(mlow), _float(mhigh)]
    return out


def action_sensitivity(scores: dict[str, dict[str, np.ndarray]], seed: int = 0) -> dict:
    """ΔPSNR = model - shuffled actions, paired per window, with its interval and a plain-words verdict."""
    delta = scores["psnr"]["model"] - scores["psnr"]["shuffled_actions"]
    mean = float(delta.mean())
    low, high = M.bootstrap_ci(delta, lambda v, a: v.mean((a, a + 1)), seed=seed)
    ignores = mean < ACTION_DB_THRESHOLD or float(low) <= 0.0
    return {"delta_psnr_db": mean, "ci": [float(low), float(high)], "ignores_actions": ignores,
            "verdict": action_verdict(mean, float(low), float(high), ignores)}


def action_verdict(mean: float, low: float, high: float, ignores: bool) -> str:
    """One sentence on whether the model uses its actions."""
    interval = f"ΔPSNR (real - shuffled actions) = {mean:+.2f} dB, 95 % CI [{low:+.2f}, {high:+.2f}]"
    if ignores:
        return (f"The model ignores its actions: {interval}. Its predictions barely change when the actions are "
                "shuffled, so it cannot be used to predict the effect of an action.")
    if mean < WEAK_ACTION_DB:
        return (f"The model uses its actions only weakly: {interval}. Shuffling them costs less than "
                f"{WEAK_ACTION_DB:g} dB; look at the moved-pixel PSNR and the videos before trusting it.")
    return f"The model uses its actions: {interval}."


def _float(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 5)


def _floats(values: np.ndarray) -> list[float | None]:
    return [_float(v) for v in values]
