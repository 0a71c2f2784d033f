"""`teleworld plan`: goal-reaching control with the world model, scored in the simulator against baselines.

    for each method (model, random, oracle, expert), for each episode seed (the same seeds for every method):
        scene.reset(seed)
        each control step:  model: observe the real frame into the posterior (obs_step with the previous action)
                            planners: every `replan` steps, plan (replay/planning.py) and queue the first actions
                            the simulator executes one action
        until the scene's success or `steps` steps
    -> plan.json (success rate with Wilson 95 % CI per method, distances, plan ms, the model's ranking agreement
       with the simulator under --rank-checks), episodes.csv, calibration.csv, ranking.csv,
       plan_<method>.mp4 (real | imagined end of the chosen plan | goal), report.html
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import imageio
import mujoco
import numpy as np
import torch

from recorder import EpisodeStore, EpisodeWriter
from replay.planning import (SHAPING, EnsembleScorer, ModelScorer, Plan, Planner, PlannerConfig, SimulatorScorer,
                             StateScorer, ranking_agreement)
from teleop.devices.base import Device
from teleop.devices.scripted import RandomPersistent, goal_expert
from teleop.loop import step_record
from teleop.operate import check_compatible
from teleop.scenes import load
from teleop.scenes.base import Observation, Scene
from teleop.scenes.push import PushScene
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar
from train.checkpoint import load_model, read_checkpoint
from train.dataset import DataSpec
from train.model import WorldModel
from train.state_model import KIND as STATE_KIND
from train.state_model import StateModel, load_state_model

METHODS = ("model", "random", "oracle", "expert")
FIRST_SEED = 100_000  # episode seeds start here by default: far from the 0.. seeds `generate` and the demo record
VIDEO_SCALE = 4


@dataclass
class PlanSettings:
    """What one `teleworld plan` run does besides the planner's own budget."""

    episodes: int = 50
    steps: int = 120  # control steps per episode at most (it ends at success)
    replan: int = 1  # knots (each `repeat` control steps) executed per plan before replanning
    seed: int = FIRST_SEED  # episode i resets the scene with seed + i
    methods: tuple[str, ...] = METHODS
    oracle_candidates: int = 64  # the oracle's smaller budget: MuJoCo steps each candidate for real
    oracle_iterations: int = 2
    video_episodes: int = 1  # episodes drawn into each method's video
    rank_checks: int = 0  # the model's first plans per episode whose candidates the simulator scores too

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise TeleworldError(f"--methods takes a comma-separated subset of {','.join(METHODS)}, "
                                 f"got {','.join(self.methods) or 'nothing'}")
        if self.episodes < 1 or self.steps < 1 or self.replan < 1:
            raise TeleworldError("--episodes, --steps and --replan must each be at least 1")
        if self.rank_checks < 0:
            raise TeleworldError(f"--rank-checks must be at least 0, got {self.rank_checks}")


@dataclass
class Episode:
    """One episode of one method."""

    method: str
    episode: int
    seed: int
    success: bool
    steps: int  # control steps taken (fewer than the budget when it succeeded early)
    final_distance: float
    return_: float  # sum of the scene's rewards over the steps taken
    plan_ms: list[float] = field(default_factory=list)
    calibration: list[tuple[int, float, float, float]] = field(default_factory=list)  # step, predicted, spread, real
    ranking: list[tuple[int, float | None, float]] = field(default_factory=list)  # step, rho, chosen quantile


# ----- what a scene means by done, how far, and what its goal looks like -----
def is_success(scene: Scene) -> bool:
    """The scene's own success() (None, a task without a label, counts as not done)."""
    return bool(scene.success())


def goal_frame(scene: Scene, camera: str) -> np.ndarray:
    """What success looks like: push's box moved onto its (undrawn) goal; other scenes draw their target already."""
    if not isinstance(scene, PushScene):
        return scene.render(camera)
    saved = scene.get_state()
    scene.data.qpos[2:4] = scene.goal()
    mujoco.mj_forward(scene.model, scene.data)
    frame = scene.render(camera)
    scene.set_state(saved)
    return frame


def move_goal(scene: Scene, delta: np.ndarray) -> np.ndarray:
    """Shift the episode's goal by ``delta`` (x, y, m), where the scene's task lets it go; returns the goal."""
    goal = scene.goal()
    return scene.task.set_goal(scene, goal + np.asarray(delta)[: len(goal)])


# ----- controllers: one per method, the same reset/act interface -----
class ScriptedController:
    """A scripted operator (random exploration or the goal-aware expert) through the Device interface."""

    def __init__(self, device: Device):
        self.device = device

    def reset(self, obs: Observation, seed: int) -> None:
        self.device.on_reset(obs, np.random.default_rng(seed + 1_000_003))  # as teleop.loop.run_episode seeds it

    def act(self, obs: Observation) -> np.ndarray:
        return self.device.get_action(obs)


class PlanningController:
    """Replans every ``replan`` steps with a scorer; the model's scorer first observes each real frame.

    ``members``: further world models of the same data; with them every candidate is scored by each model from its
    own posterior (an ensemble), and ``cfg.spread_penalty`` penalises their disagreement."""

    def __init__(self, scene: Scene, cfg: PlannerConfig, replan: int, model: WorldModel | StateModel | None = None,
                 camera: str = "", draw: bool = False, rank_checks: int = 0,
                 members: Sequence[WorldModel | StateModel] = ()):
        self.scene, self.cfg, self.replan, self.model, self.camera = scene, cfg, replan, model, camera
        self.models = [model, *members] if model is not None else []
        self.draws = model is not None  # a model can show its imagined plan (the oracle and scripts cannot)
        self.draw = draw and self.draws  # draw the end of each chosen plan (for the video)
        self.rank_checks = rank_checks if model is not None else 0  # plans per episode checked in the simulator
        self.warm = False  # the compiled imagination has run once (PlannerConfig.compile)
        spec = scene.action_spec
        self.low, self.high = np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32)

    def reset(self, obs: Observation, seed: int) -> None:
        self.planner = Planner(self.cfg, self.low, self.high, seed)
        self.queue: list[np.ndarray] = []
        self.plans: list[tuple[int, float, float, float]] = []  # step, predicted return, spread, ms
        self.ranking: list[tuple[int, float | None, float]] = []  # step, rho, chosen quantile (rank checks)
        self.step, self.imagined = 0, None
        if self.model is None:
            self.members: list[ModelScorer] = []
            self.scorer = SimulatorScorer(self.scene, self.cfg.shaping)
        else:
            self.members = [self._scorer(m, seed) for m in self.models]
            self.scorer = self.members[0] if len(self.members) == 1 else EnsembleScorer(self.members)
            self.prev_action = np.zeros(len(self.low), np.float32)
            if self.cfg.compile and not self.warm:
                for member in self.members:
                    if isinstance(member, ModelScorer):  # a state model is not compiled
                        member.warm_up(self.cfg.candidates, self.cfg.horizon * self.cfg.repeat)
                self.warm = True

    def _scorer(self, model: WorldModel | StateModel, seed: int) -> ModelScorer | StateScorer:
        goal, shaping = self.scene.goal().astype(np.float32), SHAPING.get(self.scene.name)
        if isinstance(model, StateModel):
            return StateScorer(model, goal, shaping, self.cfg.shaping)
        return ModelScorer(model, goal, self.cfg.samples, seed, shaping, self.cfg.shaping, self.cfg.compile)

    @torch.no_grad()
    def _observe(self, obs: Observation) -> None:
        """Give each model the real frame and state, after the action that led to them."""
        device = next(self.model.parameters()).device
        frame = torch.from_numpy(obs.frames[self.camera]).to(device).permute(2, 0, 1).float().div(255.0)
        self.frame = frame[None]
        action = torch.from_numpy(self.prev_action).to(device)[None]
        proprio = torch.from_numpy(np.concatenate([obs.qpos, obs.qvel])).float().to(device)[None]
        for member in self.members:
            member.observe(self.frame, action, proprio, obs.extras)

    @torch.no_grad()
    def _draw(self, actions: np.ndarray) -> np.ndarray:
        """The frame the model imagines at the end of the plan: an image model's decoded over the last real frame,
        a state model's imagined state rendered by the scene."""
        if isinstance(self.model, StateModel):
            start = self.members[0].proprio
            end = self.model.imagine(start, torch.as_tensor(actions, dtype=torch.float32)[None])[0, -1]
            return self.scene.render_pose(end[: self.scene.model.nq].double().numpy(), self.camera)
        feat = self.members[0].imagine(actions)[:, -1:]
        ahead = torch.tensor([len(actions)])
        image = self.model.decode(feat, self.frame, ahead)["image"][0, 0]
        return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def _check_ranking(self, plan: Plan) -> None:
        """Score the plan's last candidates in the simulator from the current state (restored afterwards) and
        record how well the model ranked them; outside the timed replanning step."""
        truth = SimulatorScorer(self.scene, self.cfg.shaping)(plan.candidates.repeat_interleave(self.cfg.repeat, 1))
        self.ranking.append((self.step, *ranking_agreement(plan.scores, truth[:, 0])))

    def retarget(self) -> None:
        """Plan toward the scene's goal as it is now (after the operator moved it)."""
        for member in self.members:
            member.goal = torch.as_tensor(self.scene.goal(), dtype=torch.float32, device=member.goal.device)

    def act(self, obs: Observation) -> np.ndarray:
        if self.model is not None:
            self._observe(obs)
        if not self.queue:
            plan = self.planner.plan(self.scorer)
            self.plans.append((self.step, plan.predicted_return, plan.spread, plan.ms))
            if len(self.ranking) < self.rank_checks:
                self._check_ranking(plan)
            self.queue = list(plan.actions[: self.replan * self.cfg.repeat])
            self.planner.shift(self.replan)
            if self.draw and self.model is not None:
                self.imagined = self._draw(plan.actions)
        action = self.queue.pop(0)
        self.step += 1
        if self.model is not None:
            self.prev_action = self.scene.action_spec.clip(action)
        return action


def controller_for(method: str, scene: Scene, cfg: PlannerConfig, settings: PlanSettings,
                   model: WorldModel | None, camera: str, members: Sequence[WorldModel] = ()
                   ) -> PlanningController | ScriptedController:
    """The controller of one method on ``scene`` (``members``: the model's fellow ensemble members)."""
    if method == "model":
        return PlanningController(scene, cfg, settings.replan, model, camera, rank_checks=settings.rank_checks,
                                  members=members)
    if method == "oracle":
        oracle = PlannerConfig(**{**cfg.to_dict(), "candidates": settings.oracle_candidates, "samples": 1,
                                  "iterations": settings.oracle_iterations,
                                  "elites": oracle_elites(cfg, settings.oracle_candidates)})
        return PlanningController(scene, oracle, settings.replan)
    if method == "random":
        return ScriptedController(RandomPersistent(scene.action_spec))
    return ScriptedController(goal_expert(scene))


def oracle_elites(cfg: PlannerConfig, candidates: int) -> int:
    """The oracle keeps the model planner's elite fraction of its smaller candidate budget (at least 4)."""
    return min(candidates, max(4, round(candidates * cfg.elites / cfg.candidates)))


def has_expert(scene: Scene) -> bool:
    """Whether the scene has a goal-aware scripted operator (push and the end-effector arm do)."""
    return goal_expert(scene) is not None


# ----- one episode, one method -----
def run_episode(method: str, controller: PlanningController | ScriptedController, scene: Scene, episode: int,
                seed: int, steps: int, horizon: int, camera: str, frames: list | None = None,
                writer: EpisodeWriter | None = None) -> Episode:
    """Reset with ``seed`` and let ``controller`` act until success or ``steps``; ``frames`` collects the video,
    ``writer`` records the episode (frames, actions, proprio, contacts, rewards) as `teleworld generate` does."""
    obs = scene.reset(seed)
    if writer is not None:
        writer.begin(seed=seed, scene=scene.name, device=f"planner-{method}", operator="planner")
    controller.reset(obs, seed)
    if isinstance(controller, PlanningController):
        controller.draw = frames is not None and controller.draws
    goal = goal_frame(scene, camera) if frames is not None else None
    rewards: list[float] = []
    scored: list[float] = []  # what a planner scores: the reward plus its shaping term, as the simulator gives them
    shaping = SHAPING.get(scene.name) if isinstance(controller, PlanningController) and controller.cfg.shaping else None
    done = is_success(scene)
    while not done and len(rewards) < steps:
        action = scene.action_spec.clip(controller.act(obs))
        if writer is not None:
            writer.add(*step_record(obs, action, time.monotonic()))
        obs = scene.step(action)
        rewards.append(obs.reward)
        proprio = torch.from_numpy(np.concatenate([obs.qpos, obs.qvel]))
        weight = controller.cfg.shaping if shaping is not None else 0.0
        shaped = weight * float(shaping(proprio, torch.from_numpy(scene.goal()))) if weight else 0.0
        scored.append(obs.reward + shaped)
        done = is_success(scene)
        if frames is not None:
            imagined = getattr(controller, "imagined", None)
            frames.append(video_frame(obs.frames[camera], imagined, goal))
    result = Episode(method, episode, seed, done, len(rewards), scene.task.goal_distance(scene), float(sum(rewards)))
    if writer is not None and rewards:
        writer.end(success=done, goal=scene.goal().tolist())
    elif writer is not None:
        writer.discard()  # solved at reset: no step to record
    if isinstance(controller, PlanningController):
        result.plan_ms = [p[3] for p in controller.plans]
        result.ranking = list(controller.ranking)
        if scored:  # the return the simulator then gave over the plan's horizon (past the end: the last step's)
            padded = np.concatenate([scored, np.full(horizon, scored[-1])])
            result.calibration = [(t, pred, spread, float(padded[t : t + horizon].sum()))
                                  for t, pred, spread, _ in controller.plans]
    return result


def video_frame(real: np.ndarray, imagined: np.ndarray | None, goal: np.ndarray) -> np.ndarray:
    """real | imagined end of the current plan (grey when the method imagines nothing) | goal, scaled up."""
    blank = np.full_like(real, 96)
    gap = np.full((real.shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([real, gap, blank if imagined is None else imagined, gap, goal], 1)
    return row.repeat(VIDEO_SCALE, 0).repeat(VIDEO_SCALE, 1)


# ----- statistics -----
def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score 95 % interval of a success rate."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def summarise(episodes: list[Episode]) -> dict:
    """Success rate with its CI, distances, returns, steps and (planners) plan milliseconds of one method."""
    n, wins = len(episodes), sum(e.success for e in episodes)
    distance = np.array([e.final_distance for e in episodes])
    out = {"episodes": n, "successes": wins, "success_rate": wins / n, "ci": wilson(wins, n),
           "solved_at_reset": sum(e.success and e.steps == 0 for e in episodes),  # the seed's start already succeeds
           "final_distance_mean": float(np.mean(distance)), "final_distance_median": float(np.median(distance)),
           "return_mean": float(np.mean([e.return_ for e in episodes])),
           "steps_mean": float(np.mean([e.steps for e in episodes])),
           "plan_ms_p50": None, "plan_ms_p99": None}
    ms = np.concatenate([e.plan_ms for e in episodes]) if any(e.plan_ms for e in episodes) else np.zeros(0)
    if len(ms):
        out.update(plan_ms_p50=float(np.percentile(ms, 50)), plan_ms_p99=float(np.percentile(ms, 99)),
                   plans=int(len(ms)))
    rows = [row for e in episodes for row in e.calibration]
    if rows:
        pred, spread, real = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
        error = np.abs(pred - real)
        out["calibration"] = {"plans": len(rows), "abs_error_mean": float(error.mean()),
                              "spread_mean": float(spread.mean()),
                              "spread_error_corr": _corr(spread, error)}
    checks = [row for e in episodes for row in e.ranking]
    if checks:
        rho = np.array([r[1] for r in checks if r[1] is not None])
        out["ranking"] = {"checks": len(checks), "rho_mean": float(rho.mean()) if len(rho) else None,
                          "rho_median": float(np.median(rho)) if len(rho) else None,
                          "chosen_quantile_mean": float(np.mean([r[2] for r in checks]))}
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def comparisons(methods: dict) -> dict:
    """The issue's bar: model >= 2x random and >= 0.5x oracle (success-rate ratios; None where undefined)."""
    def ratio(a: str, b: str) -> float | None:
        if a not in methods or b not in methods or methods[b]["success_rate"] == 0:
            return None
        return methods[a]["success_rate"] / methods[b]["success_rate"]

    return {"model_over_random": ratio("model", "random"), "model_over_oracle": ratio("model", "oracle"),
            "oracle_over_random": ratio("oracle", "random")}


# ----- the whole run -----
def run_plan(model_path: str | Path, out_dir: str | Path, cfg: PlannerConfig, settings: PlanSettings,
             device: torch.device | str = "cpu", show_progress: bool = True,
             ensemble: Sequence[str | Path] = (), record: str | Path | None = None) -> dict:
    """Run every method on the same seeds and write plan.json, episodes.csv, calibration.csv, videos, report.
    ``ensemble``: further runs on the same scene and camera that score every candidate alongside ``model_path``.
    ``record``: a store (created, or appended to) that receives every episode run, to train on what the planner did."""
    from replay.plan_report import write_report

    model, spec, ckpt = load_planning_model(model_path, device, settings)
    members = [load_planning_model(path, device, settings, spec)[0] for path in ensemble]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = load(spec.scene, image_size=(spec.image_size, spec.image_size), cameras=(spec.camera,))
    methods = [m for m in settings.methods if m != "expert" or has_expert(scene)]
    skipped = [m for m in settings.methods if m not in methods]
    seeds = [settings.seed + i for i in range(settings.episodes)]
    results: dict[str, list[Episode]] = {}
    videos: dict[str, Path] = {}
    store = open_record_store(Path(record), scene) if record is not None else None
    writer = EpisodeWriter(store) if store is not None else None
    torch.set_grad_enabled(False)
    try:
        with progress_bar(show_progress) as progress:
            for method in methods:
                controller = controller_for(method, scene, cfg, settings, model, spec.camera, members)
                task = progress.add_task(f"plan {method}", total=len(seeds), status="", unit="episodes")
                results[method], frames = [], []
                for i, seed in enumerate(seeds):
                    drawn = frames if i < settings.video_episodes else None
                    ep = run_episode(method, controller, scene, i, seed, settings.steps, cfg.horizon * cfg.repeat,
                                     spec.camera, drawn, writer)
                    results[method].append(ep)
                    wins = sum(e.success for e in results[method])
                    progress.update(task, advance=1, status=f"success {wins}/{i + 1}")
                if frames:
                    videos[method] = write_video(frames, out_dir / f"plan_{method}.mp4", scene.control_rate)
    finally:
        torch.set_grad_enabled(True)
        scene.close()
        if writer is not None and writer.recording:
            writer.discard()  # an episode cut short by an error: the committed ones stay whole
        if store is not None:
            store.close()
    summary = {
        "methods": {m: summarise(eps) for m, eps in results.items()},
        "config": {"model": str(model_path), "model_step": ckpt.get("step"), "ensemble": [str(p) for p in ensemble],
                   "scene": spec.scene,
                   "record": None if record is None else str(record), "planner": cfg.to_dict(),
                   **{k: v for k, v in asdict(settings).items() if k != "methods"},
                   "methods": list(methods), "skipped": skipped, "seeds": [seeds[0], seeds[-1]],
                   "device": str(device), "threads": torch.get_num_threads()},
    }
    summary["comparisons"] = comparisons(summary["methods"])
    write_tables(results, out_dir)
    (out_dir / "plan.json").write_text(json.dumps(summary, indent=2))
    write_report(summary, results, videos, out_dir)
    return summary


def load_planning_model(path: str | Path, device: torch.device | str, settings: PlanSettings,
                        like: DataSpec | None = None) -> tuple[WorldModel | StateModel, DataSpec, dict]:
    """A run to plan with, an image world model or a state model (train/state_model.py): it needs a reward head,
    and an ensemble member must see what the first run sees."""
    if read_checkpoint(path).get("kind") == STATE_KIND:
        model, spec, ckpt = load_state_model(path, device)
    else:
        model, spec, ckpt = load_model(path, device)
    if "model" in settings.methods and model.reward_head is None:
        raise TeleworldError(f"{path} has no reward head (trained before planning existed or with "
                             "reward_weight=0); retrain it with `teleworld train` to plan with it")
    if like is not None and (spec.scene, spec.camera, spec.image_size, spec.action_names) != (
            like.scene, like.camera, like.image_size, like.action_names):
        raise TeleworldError(f"{path} was trained on {spec.scene}/{spec.camera} at {spec.image_size} px, the first "
                             f"--model on {like.scene}/{like.camera} at {like.image_size} px: an ensemble needs "
                             "runs of one scene, camera and image size")
    return model, spec, ckpt


def open_record_store(path: Path, scene: Scene) -> EpisodeStore:
    """The store `plan --record` writes to: created, or appended to when it holds this scene's kind of episodes."""
    if not path.exists():
        return EpisodeStore.create(path, scene.info())
    store = EpisodeStore.open(path, mode="a")
    try:
        check_compatible(store.info, scene.info())
    except TeleworldError:
        store.close()
        raise
    return store


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p") as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def write_tables(results: dict[str, list[Episode]], out_dir: Path) -> None:
    """episodes.csv (one row per method and episode) and calibration.csv (one row per model plan)."""
    with open(out_dir / "episodes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "episode", "seed", "success", "steps", "final_distance", "return", "plan_ms_mean"])
        for method, episodes in results.items():
            for e in episodes:
                ms = f"{np.mean(e.plan_ms):.3f}" if e.plan_ms else ""
                w.writerow([method, e.episode, e.seed, int(e.success), e.steps, f"{e.final_distance:.5f}",
                            f"{e.return_:.5f}", ms])
    with open(out_dir / "calibration.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "episode", "step", "predicted_return", "spread", "realised_return"])
        for method, episodes in results.items():
            for e in episodes:
                for step, pred, spread, real in e.calibration:
                    w.writerow([method, e.episode, step, f"{pred:.5f}", f"{spread:.5f}", f"{real:.5f}"])
    if any(e.ranking for episodes in results.values() for e in episodes):
        with open(out_dir / "ranking.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method", "episode", "step", "rho", "chosen_quantile"])
            for method, episodes in results.items():
                for e in episodes:
                    for step, rho, quantile in e.ranking:
                        w.writerow([method, e.episode, step, "" if rho is None else f"{rho:.4f}", f"{quantile:.4f}"])

