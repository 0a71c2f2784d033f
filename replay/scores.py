"""Per-window, per-step scores of every method, and their summaries with bootstrap intervals over windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replay import metrics as M
from replay.rollout import WindowBatch

ACTION_DB_THRESHOLD = 0.1  # ΔPSNR (dB) below which, or with a 95 % interval reaching 0, the model ignores actions
WEAK_ACTION_DB = 1.0  # ΔPSNR (dB) below which its use of actions is called weak
FROM_STEP = 5  # imagined step (1-based) from which "from step 5" means are taken: the first steps favour copy-last
POSITION_BANDS = ((1, 9), (10, None))  # imagined steps (1-based, inclusive; None: the horizon) of position means
FLOOR_METHOD = "detector_floor"  # the position detector on the real frames: the floor of the position error


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
    "contact_onset_f1": Metric(f"contact onset F1 (±{M.EVENT_TOLERANCE} steps)", "", True, pooled=True),
    "contact_release_f1": Metric(f"contact release F1 (±{M.EVENT_TOLERANCE} steps)", "", True, pooled=True),
    "position_error": Metric("position error (tracked bodies)", "cm", False),
    "reward_error": Metric("reward |error| (reward head)", "recorded units", False),
}

# per contact group: what is scored (contact states, onsets, releases) -> the metric that pools it over groups
CONTACT_KINDS = {"contact": "contact_f1", "onset": "contact_onset_f1", "release": "contact_release_f1"}


def contact_scores(b: WindowBatch) -> dict[str, dict[str, np.ndarray]]:
    """kind (CONTACT_KINDS) -> method -> (B, H, G, 3) counts per contact group for the imagined steps.

    Onsets and releases are taken against the contacts of the last context step, the same for every method (so
    copy-last, which holds them, predicts none) and matched within ±EVENT_TOLERANCE steps."""
    if "contact" not in b.truth or not b.truth["contact"].shape[-1]:  # a scene without contact groups
        return {}
    k = b.context
    truth = b.truth["contact"][:, k:] > 0.5
    before = b.truth["contact"][:, k - 1] > 0.5
    true_on, true_off = M.contact_events(truth, before)
    out: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in CONTACT_KINDS}
    for method, pred in b.preds.items():
        if "contact" in pred:
            flags = np.asarray(pred["contact"]) > 0.5
            on, off = M.contact_events(flags, before)
            out["contact"][method] = M.contact_counts_per_group(flags, truth)
            out["onset"][method] = M.event_counts(on, true_on)
            out["release"][method] = M.event_counts(off, true_off)
    return {kind: by_method for kind, by_method in out.items() if by_method}


def score_batch(b: WindowBatch, contacts: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """metric -> method -> (B, H) values, or (B, H, 3) counts pooled over contact groups, for the imagined steps.
    ``contacts``: the batch's contact_scores when already computed."""
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
        if "reward" in pred and "reward" in b.preds.get("model", {}):  # copy_last: the constant-reward baseline
            out["reward_error"][method] = np.abs(pred["reward"] - b.truth["reward"][:, k:])
    for method, errors in position_scores(b).items():
        out["position_error"][method] = errors.mean(-1)
    for kind, by_method in (contact_scores(b) if contacts is None else contacts).items():
        for method, counts in by_method.items():
            out[CONTACT_KINDS[kind]][method] = counts.sum(-2)
    return {name: by_method for name, by_method in out.items() if by_method}


def position_scores(b: WindowBatch) -> dict[str, np.ndarray]:
    """method -> (B, H, bodies) distance in cm between each tracked body's detected position (replay/positions.py)
    and its true one, for the imagined steps; empty without positions."""
    if "position" not in b.truth:
        return {}
    truth = b.truth["position"][:, b.context :]
    return {method: M.distance_cm(pred["position"], truth) for method, pred in b.preds.items() if "position" in pred}


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


def summarise(scores: dict[str, dict[str, np.ndarray]], seed: int = 0, from_step: int = FROM_STEP) -> dict:
    """Per-step values, means over the horizon and their 95 % bootstrap intervals for every metric and method; and
    the means from imagined step ``from_step`` on (null when the horizon is shorter)."""
    out: dict = {"per_step": {}, "ci": {}, "mean": {}, "mean_ci": {}, "mean_from_step": {}, "mean_from_step_ci": {}}
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
            mean, ci = _mean_with_ci(values[:, from_step - 1 :], lambda v, a: overall(v, pooled, a), seed)
            out["mean_from_step"][name][method], out["mean_from_step_ci"][name][method] = mean, ci
    return {"from_step": from_step, **out}


def summarise_positions(errors: dict[str, np.ndarray], bodies: list[str], seed: int = 0,
                        from_step: int = FROM_STEP) -> dict:
    """Position error per tracked body and over all of them ("all"): per step, means over the horizon, from step
    ``from_step`` and over the step bands of POSITION_BANDS, with 95 % intervals; ``floor``: the detector's own
    error on the real frames (method ``detector_floor``). ``errors``: method -> (W, H, bodies) cm."""
    horizon = next(iter(errors.values())).shape[1]
    out: dict = {"unit": "cm", "bodies": list(bodies), "floor_method": FLOOR_METHOD, "per_body": {}, "bands": {},
                 "floor": {}}
    for i, name in [*enumerate(bodies), (None, "all")]:
        values = {m: v.mean(-1) if i is None else v[..., i] for m, v in errors.items()}
        summary = summarise({"position_error": values}, seed, from_step)
        out["per_body"][name] = {key: summary[key]["position_error"] for key in
                                 ("per_step", "ci", "mean", "mean_ci", "mean_from_step", "mean_from_step_ci")}
        out["floor"][name] = summary["mean"]["position_error"].get(FLOOR_METHOD)
        out["bands"][name] = {}
        for first, last in POSITION_BANDS:
            last = min(last or horizon, horizon)
            if first > last:
                continue
            band = {}
            for m, v in values.items():
                mean, ci = _mean_with_ci(v[:, first - 1 : last], lambda x, a: overall(x, False, a), seed)
                band[m] = {"mean": mean, "ci": ci}
            out["bands"][name][f"{first}-{last}"] = band
    return out


def summarise_contacts(contacts: dict[str, dict[str, np.ndarray]], groups: list[str], seed: int = 0,
                       from_step: int = FROM_STEP) -> dict:
    """Per contact group, kind and method: precision, recall and F1 with 95 % bootstrap intervals over windows,
    the true and the predicted count, over the whole horizon ("horizon") and from imagined step ``from_step`` on
    ("from_step"). ``contacts``: kind -> method -> (W, H, G, 3) counts (contact_scores); ``groups``: G names."""
    out: dict = {"tolerance_steps": M.EVENT_TOLERANCE, "groups": list(groups), "horizon": {}, "from_step": {}}
    for span, first in (("horizon", 0), ("from_step", from_step - 1)):
        for kind, by_method in contacts.items():
            out[span][kind] = {name: {} for name in groups}
            for method, counts in by_method.items():
                for g, name in enumerate(groups):
                    out[span][kind][name][method] = _rates(counts[:, first:, g], seed)
    return out


def _rates(counts: np.ndarray, seed: int) -> dict:
    """(W, H, 3) counts -> precision, recall, F1 of all of them pooled, each with its interval, and the counts."""
    total = counts.sum((0, 1))
    out: dict = {"true": int(total[0] + total[2]), "predicted": int(total[0] + total[1])}
    for name, rate in (("precision", M.precision), ("recall", M.recall), ("f1", M.f1)):
        out[name], out[f"{name}_ci"] = _mean_with_ci(counts, lambda v, a, r=rate: r(v.sum((a, a + 1))), seed)
    return out


def _mean_with_ci(values: np.ndarray, statistic, seed: int) -> tuple[float | None, list[float | None]]:
    """``statistic`` of (W, H, ...) ``values`` over windows and steps and its bootstrap interval; None without steps."""
    if values.shape[0] == 0 or values.shape[1] == 0:
        return None, [None, None]
    low, high = M.bootstrap_ci(values, statistic, seed=seed)
    return _float(statistic(values, 0)), [_float(low), _float(high)]


def paired_gain(scores: dict[str, dict[str, np.ndarray]], baseline: str, seed: int = 0) -> tuple[float, float, float]:
    """Mean PSNR of the model minus ``baseline`` over the horizon, paired per window: (mean, CI low, CI high)."""
    delta = scores["psnr"]["model"] - scores["psnr"][baseline]
    low, high = M.bootstrap_ci(delta, lambda v, a: v.mean((a, a + 1)), seed=seed)
    return float(delta.mean()), float(low), float(high)


def action_sensitivity(scores: dict[str, dict[str, np.ndarray]], seed: int = 0) -> dict:
    """ΔPSNR = model - shuffled actions, paired per window, with its interval and a plain-words verdict."""
    mean, low, high = paired_gain(scores, "shuffled_actions", seed)
    ignores = mean < ACTION_DB_THRESHOLD or low <= 0.0
    return {"delta_psnr_db": mean, "ci": [low, high], "ignores_actions": ignores,
            "verdict": action_verdict(mean, low, high, ignores)}


def versus_baselines(scores: dict[str, dict[str, np.ndarray]], seed: int = 0) -> dict:
    """For each baseline the model must beat: its PSNR gain with a 95 % CI and a plain sentence saying whether it won
    (only when the whole interval is above zero)."""
    out = {}
    for baseline in BEAT:
        mean, low, high = paired_gain(scores, baseline, seed)
        verdict = "beat" if low > 0 else "did not beat" if high < 0 else "is level with"
        out[baseline] = {"delta_psnr_db": mean, "ci": [low, high], "beats": low > 0,
                         "sentence": f"The model {verdict} {BEAT[baseline]}: {mean:+.2f} dB mean PSNR over the "
                                     f"horizon, 95 % CI [{low:+.2f}, {high:+.2f}]."}
    return out


BEAT = {"copy_last": "copying the last frame", "median_frame": "the median frame (an empty scene)",
        "shuffled_actions": "itself fed shuffled actions"}


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
