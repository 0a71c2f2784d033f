"""Evaluate a trained model on held-out episodes of a store and write the replay report (protocol: docs/replay.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recorder import EpisodeStore
from replay.metrics import MOVED_THRESHOLD, PSNR_CAP
from replay.positions import CACHE_NAME, tracker
from replay.report import write_report
from replay.rollout import median_frame, pick_windows, rollouts
from replay.scores import action_sensitivity, concat_scores, score_batch, summarise, versus_baselines
from replay.scores import contact_scores, position_scores, summarise_contacts, summarise_positions
from replay.simulate import scene_changed, simulate
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar
from train.calibration import calibrate
from train.checkpoint import load_model
from train.dataset import DataSpec, EpisodeArrays
from train.model import WorldModel


def load_for_replay(model_path: str | Path, data_path: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[WorldModel, EpisodeArrays, dict, EpisodeStore]:
    """(model, data, checkpoint, store): refuses data the model was not trained for, with one line."""
    model, spec, ckpt = load_model(model_path, device)
    store = EpisodeStore.open(data_path)
    spec.check_compatible(DataSpec.from_store(store, spec.camera))
    data = EpisodeArrays(store, spec)
    if model.reward_head is not None and model.cfg.goal_dim:  # the reward head's goal input (train/goals.py)
        try:
            data.load_goals()
        except TeleworldError:  # a store recorded before goals were: the reward head is not scored
            pass
    return model, data, ckpt, store


def training_summary(ckpt: dict) -> dict:
    """What training bought: steps, wall-clock seconds and the budget asked (minutes, 0 for none)."""
    cfg = ckpt.get("train_config", {})
    cfg = cfg.get("run", cfg)  # its run section (a config saved before the sections: flat)
    return {"steps": int(ckpt["step"]), "seconds": ckpt.get("train_seconds"), "budget_minutes": cfg.get("minutes", 0),
            "config_steps": cfg.get("steps")}


def held_out_episodes(ckpt: dict, data: EpisodeArrays) -> list[int]:
    """The run's validation episodes active in this store, else every active episode (deleted ones never)."""
    active = data.active.tolist()
    return [e for e in ckpt.get("val_episodes", []) if e in active] or active


def training_episodes(ckpt: dict, data: EpisodeArrays, evaluated: list[int]) -> list[int]:
    """The run's active training episodes, else every active episode not evaluated, else every active episode."""
    active, held_out = data.active.tolist(), set(evaluated)
    train = [e for e in ckpt.get("train_episodes", []) if e in active and e not in held_out]
    return train or [e for e in active if e not in held_out] or active


def contact_cuts(model: WorldModel, data: EpisodeArrays, ckpt: dict, train_episodes: list[int],
                 evaluated: list[int], seed: int) -> np.ndarray | None:
    """Per contact group, the probability above which the model's contact is called: the run's own (saved with
    the checkpoint), else chosen now on the training episodes, else (no training episode apart from the evaluated
    ones: a store the run never saw) 0.5; None without a contact head."""
    if model.contact_head is None:
        return None
    if ckpt.get("contact_thresholds") is not None:
        return np.asarray(ckpt["contact_thresholds"], np.float32)
    if set(train_episodes) & set(evaluated):
        return np.full(model.cfg.contact_dim, 0.5, np.float32)
    chosen = calibrate(model, data, np.asarray(train_episodes, np.int64), seed)
    return None if chosen is None else np.asarray(chosen, np.float32)


def chosen_episodes(episodes: list[int] | str | None, ckpt: dict, data: EpisodeArrays) -> list[int]:
    """None: the run's held-out episodes; "all": every active one; a list: those, refusing deleted or unknown ones."""
    if episodes is None:
        return held_out_episodes(ckpt, data)
    if episodes == "all":
        return data.active.tolist()
    refused = [e for e in episodes if e not in data.active]
    if refused:
        raise TeleworldError(f"episode {refused[0]} is not an active episode of the store (deleted or missing); "
                             f"active: {data.active.tolist()}")
    return list(episodes)


def evaluate(model_path: str | Path, data_path: str | Path, out_dir: str | Path, context: int = 5,
             horizon: int = 50, windows: int = 16, seed: int = 0, device: str | torch.device = "cpu",
             episodes: list[int] | str | None = None, video_windows: int = 4, simulator: bool = False,
             show_progress: bool = True) -> dict:
    """Open-loop replay of seeded windows for the model and every baseline; writes the report.

    ``episodes``: None for the run's held-out episodes, "all" for every active one, or a list of indices.
    ``simulator``: also re-run the scene from the recorded states with the recorded actions (a data check)."""
    if context < 1 or horizon < 1:
        raise TeleworldError("context and horizon must both be at least 1")
    if windows < 1:
        raise TeleworldError("--windows must be at least 1")
    model, data, ckpt, store = load_for_replay(model_path, data_path, device)
    episodes = chosen_episodes(episodes, ckpt, data)
    starts = pick_windows(data, episodes, context + horizon, windows, seed)
    train_episodes = training_episodes(ckpt, data, episodes)
    background = median_frame(data, train_episodes)
    positions = tracker(store, data.frames, data.spec.camera, train_episodes,
                        {"model": str(Path(model_path).resolve()), "step": int(ckpt["step"])},
                        Path(out_dir) / CACHE_NAME)
    thresholds = contact_cuts(model, data, ckpt, train_episodes, episodes, seed)
    parts, contact_parts, position_parts = [], [], []
    video: dict[str, list] = {"truth": [], "model": [], "simulator": []}
    with progress_bar(show_progress) as progress:
        task = progress.add_task("replay windows", total=len(starts), status="", unit="windows")
        for b in rollouts(model, data, starts, context, horizon, device, seed, int(store.info["nq"]),
                          background=background, thresholds=thresholds):
            if simulator:
                b.preds["simulator"] = simulate(store, data.spec.camera, b.starts, context, horizon)
            if positions is not None:
                positions.annotate(b)
                position_parts.append(position_scores(b))
            contact_parts.append(contact_scores(b))
            parts.append(score_batch(b, contact_parts[-1]))
            if sum(map(len, video["truth"])) < video_windows:  # keep frames of the first windows only
                video["truth"].append(b.truth["image"])
                video["model"].append(np.concatenate([b.context_recon, b.preds["model"]["image"]], 1))
                if simulator:
                    video["simulator"].append(np.concatenate([b.truth["image"][:, :context],
                                                              b.preds["simulator"]["image"]], 1))
            progress.advance(task, len(b.starts))
    scores = concat_scores(parts)
    summary = summarise(scores, seed)
    psnr = summary["mean"]["psnr"]
    metrics = {
        "context": context,
        "horizon": horizon,
        "windows": int(len(starts)),
        "window_starts": starts.tolist(),
        "episodes": [int(e) for e in episodes],
        "seed": seed,
        "scene": data.spec.scene,
        "model_path": str(model_path),
        "data_path": str(data_path),
        "model_step": int(ckpt["step"]),
        "psnr_cap_db": PSNR_CAP,
        "moved_threshold": MOVED_THRESHOLD,
        **summary,
        "model_minus_copy_last_db": psnr["model"] - psnr["copy_last"],
        "model_minus_median_frame_db": psnr["model"] - psnr["median_frame"],
        "action_sensitivity": action_sensitivity(scores, seed),
        "versus_baselines": versus_baselines(scores, seed),
        "training": training_summary(ckpt),
    }
    if "model_unblended" in psnr:  # the world model's own frames (docs/replay.md, "The model without help")
        metrics["model_unblended_minus_copy_last_db"] = psnr["model_unblended"] - psnr["copy_last"]
    if simulator:
        metrics["simulator_scene_changed"] = scene_changed(store)
    if contact_parts and contact_parts[0]:  # per contact group: states, onsets and releases (docs/replay.md)
        groups = ["/".join(pair) for pair in store.info.get("contact_groups", [])]
        metrics["contact_events"] = summarise_contacts(concat_scores(contact_parts), groups, seed)
        if thresholds is not None:  # chosen on training windows (train/calibration.py)
            metrics["contact_events"]["thresholds"] = dict(zip(groups, thresholds.tolist()))
    if positions is not None:  # per tracked body, with the detector's floor (docs/replay.md)
        errors = concat_scores([{"position": p} for p in position_parts])["position"]
        metrics["position_error"] = summarise_positions(errors, list(positions.bodies), seed)
    rows = {k: np.concatenate(v)[:video_windows] for k, v in video.items() if v}
    return write_report(metrics, rows, Path(out_dir))
