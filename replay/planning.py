"""Sampling-based planners over action sequences (CEM, MPPI) and the two things they plan with.

A planner only sees a scoring function: candidate action sequences (N, H, A) -> returns (N, S), S sampled futures
per candidate. ``ModelScorer`` imagines every candidate from the world model's current posterior in one batched
call (no pixel decoding) and sums its reward head; ``StateScorer`` does the same with a state-space model from the
observed simulator state (the learned baseline); ``SimulatorScorer`` (the oracle) steps the true MuJoCo scene from
its current state once per candidate. Same planner, same budget knobs: the gap between them is the model's.

    each control step:  warm start (last plan shifted)  ->  for each iteration:
        sample N sequences ~ clip(mean + std * eps)  ->  score (N, S)  ->  mean - penalty * spread
        CEM: refit mean/std to the top-k    |    MPPI: top-k weighted by exp(score / temperature)
    -> the plan (mean), executed for `replan` steps, then shifted by as many
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from teleworld.errors import TeleworldError
from train.model import WorldModel
from train.state_model import StateModel

PLANNERS = ("cem", "mppi")
Scorer = Callable[[torch.Tensor], torch.Tensor]  # (N, H, A) -> (N, S) returns


Shaping = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # concat(qpos, qvel) (..., P), goal (D,) -> (...)
REACHER_LINKS = (0.12, 0.12)  # dm_control reacher.xml: shoulder to wrist, wrist to fingertip, m
PUSH_STANDOFF = 0.085  # push: box half side 0.05 + pusher radius 0.035 (unrandomized), centre to centre face-on, m


def push_behind(proprio: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """push: minus the pusher's distance to the spot behind the box, on the far side from the goal, where the pusher
    touches the box face-on. The recorded reward (box to goal) is flat until the pusher touches the box; this leads
    it there, and to the side from which a push moves the box toward the goal (the spot moves with the box)."""
    pusher, box = proprio[..., 0:2], proprio[..., 2:4]
    to_goal = goal.to(proprio.dtype) - box
    spot = box - PUSH_STANDOFF * to_goal / (to_goal.norm(dim=-1, keepdim=True) + 1e-6)
    return -(pusher - spot).norm(dim=-1)


def reacher_reach(proprio: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """reacher-hard: minus the fingertip's distance to the target, the fingertip placed by the two joint angles
    (forward kinematics). The recorded reward is 1 only while touching the small target, 0 elsewhere."""
    shoulder, elbow = proprio[..., 0], proprio[..., 0] + proprio[..., 1]
    (upper, fore), goal = REACHER_LINKS, goal.to(proprio.dtype)
    x = upper * torch.cos(shoulder) + fore * torch.cos(elbow)
    y = upper * torch.sin(shoulder) + fore * torch.sin(elbow)
    return -torch.stack([x - goal[..., 0], y - goal[..., 1]], -1).norm(dim=-1)


# Per scene, a shaping term added (times PlannerConfig.shaping) to every step's reward, for model and oracle alike.
SHAPING: dict[str, Shaping] = {"push": push_behind, "reacher-hard": reacher_reach}


@dataclass
class PlannerConfig:
    """Budget and shape of one replanning step."""

    planner: str = "cem"  # cem (refit to elites) or mppi (elites weighted by exp(score / temperature))
    candidates: int = 256  # action sequences scored per iteration
    horizon: int = 16  # knots each sequence looks ahead
    repeat: int = 1  # control steps each knot's action is held: the plan reaches horizon x repeat steps ahead
    iterations: int = 3  # refits per replanning step (the warm start makes few enough)
    elites: int = 32  # top candidates the refit uses
    temperature: float = 0.5  # MPPI: softness of the elite weights, in units of the elites' score std
    init_std: float = 0.6  # sampling std of a fresh (or newly shifted-in) step, actions in [-1, 1]
    min_std: float = 0.05  # sampling std never shrinks below this
    samples: int = 1  # sampled futures per candidate (1: the latent's expected value, deterministic)
    spread_penalty: float = 0.0  # score = mean return - this x std of the sampled returns
    shaping: float = 1.0  # weight of the scene's shaping term (SHAPING) in each step's reward (0: the reward alone)
    compile: bool = False  # compile the imagination before the first episode (CPU: torch.compile; GPU: a CUDA graph)

    def __post_init__(self) -> None:
        if self.planner not in PLANNERS:
            raise TeleworldError(f"--planner must be one of {', '.join(PLANNERS)}, not {self.planner!r}")
        for name in ("candidates", "horizon", "repeat", "iterations", "elites", "samples"):
            if getattr(self, name) < 1:
                raise TeleworldError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.elites > self.candidates:
            raise TeleworldError(f"elites ({self.elites}) cannot exceed candidates ({self.candidates})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """What one replanning step chose."""

    actions: np.ndarray  # (H x repeat, A) the plan, one row per control step; the first knots are executed
    predicted_return: float  # mean over sampled futures of the plan's return, as the scorer predicts it
    spread: float  # std of those returns (0 with one future)
    ms: float  # wall-clock milliseconds of the replanning step
    candidates: torch.Tensor  # (N, H, A) knots of the last iteration's candidates
    scores: torch.Tensor  # (N,) their scores, as the planner ranked them


class Planner:
    """CEM or MPPI over sequences within [low, high], warm-started from the previous plan shifted in time."""

    def __init__(self, cfg: PlannerConfig, low: np.ndarray, high: np.ndarray, seed: int):
        self.cfg = cfg
        self.low = torch.as_tensor(np.asarray(low, np.float32))
        self.high = torch.as_tensor(np.asarray(high, np.float32))
        self.generator = torch.Generator().manual_seed(seed)
        self.mean = torch.zeros(cfg.horizon, len(self.low))

    def shift(self, steps: int) -> None:
        """Drop the first ``steps`` knots of the plan (they were executed) and append zeros: the next warm start."""
        steps = min(steps, self.cfg.horizon)
        self.mean = torch.cat([self.mean[steps:], torch.zeros(steps, len(self.low))])

    def _score(self, scorer: Scorer, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        returns = scorer(candidates.repeat_interleave(self.cfg.repeat, 1)).float()  # (N, S)
        spread = returns.std(1, unbiased=False) if returns.shape[1] > 1 else torch.zeros(len(returns))
        return returns.mean(1) - self.cfg.spread_penalty * spread, returns

    def plan(self, scorer: Scorer) -> Plan:
        """One replanning step: ``iterations`` rounds of sample, score, refit; the last refit mean is the plan."""
        cfg, start = self.cfg, time.perf_counter()
        mean = self.mean.clamp(self.low, self.high)
        std = torch.full_like(mean, cfg.init_std)
        for _ in range(cfg.iterations):
            eps = torch.randn(cfg.candidates, *mean.shape, generator=self.generator)
            candidates = (mean + std * eps).clamp(self.low, self.high)
            candidates[0] = mean  # the current mean competes too: a good warm start is never lost
            score, _ = self._score(scorer, candidates)
            last = candidates, score
            top = score.topk(cfg.elites).indices
            elites = candidates[top]
            if cfg.planner == "cem":
                weight = torch.full((cfg.elites,), 1.0 / cfg.elites)
            else:
                s = score[top]
                weight = torch.softmax((s - s.max()) / (cfg.temperature * (s.std() + 1e-8)), 0)
            mean = (weight[:, None, None] * elites).sum(0)
            std = (weight[:, None, None] * (elites - mean).pow(2)).sum(0).sqrt().clamp_min(cfg.min_std)
        self.mean = mean
        _, returns = self._score(scorer, mean[None])
        ms = (time.perf_counter() - start) * 1e3
        spread = float(returns.std(unbiased=False)) if returns.shape[1] > 1 else 0.0
        return Plan(mean.repeat_interleave(cfg.repeat, 0).numpy(), float(returns.mean()), spread, ms, *last)


def ranking_agreement(scores: torch.Tensor, truth: torch.Tensor) -> tuple[float | None, float]:
    """How well a scorer ranks the same candidates as the simulator: Spearman's rho of ``scores`` against the
    simulator's returns ``truth`` (None where the simulator returns them all alike), and the quantile of the
    scorer's favourite among the true returns (1: it picked the truly best; 0.5: no better than a coin)."""
    s, t = scores.double().numpy(), truth.double().numpy()
    quantile = float((t <= t[s.argmax()]).mean())
    if t.std() == 0 or s.std() == 0:
        return None, quantile
    return float(spearmanr(s, t).statistic), quantile


def imagined_rewards(model: WorldModel, state: dict[str, torch.Tensor], actions: torch.Tensor,
                     goal: torch.Tensor | None, shaping: Shaping | None,
                     shaping_weight: float, anchor: tuple[torch.Tensor, torch.Tensor] | None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Rewards (rows, H) of ``actions`` (rows, H, A) imagined from ``state`` (rows, ...): the reward head plus
    ``shaping_weight`` x ``shaping`` of the proprio head, its positions anchored on ``anchor`` (the head's and the
    observed proprio at the current posterior, each (1, P)). Pure tensors in and out, so it can be compiled."""
    rssm, feats = model.rssm, []
    for h in range(actions.shape[1]):
        state = rssm.img_step(state, actions[:, h], sample=False, generator=generator)
        feats.append(rssm.feat(state))
    feat = torch.stack(feats, 1)
    reward = model.reward(feat, goal)
    if shaping is not None:
        pred = model.heads(feat, ("proprio",))["proprio"]
        ref_pred, ref_truth = (a.expand(len(pred), -1) for a in anchor)
        reward = reward + shaping_weight * shaping(model.anchor_proprio(pred, ref_pred, ref_truth).float(), goal)
    return reward


_compiled_rewards: Callable | None = None


def compiled_rewards() -> Callable:
    """imagined_rewards compiled by torch.compile (inductor), once per process; each model and batch shape
    compiles on first use (tens of seconds on a CPU), then runs with its elementwise work fused."""
    global _compiled_rewards
    if _compiled_rewards is None:
        # inductor's own imports trip torch.jit's deprecation notice once per module: noise in a user's log
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated",
                                category=DeprecationWarning)
        _compiled_rewards = torch.compile(imagined_rewards, dynamic=False)
    return _compiled_rewards


class CapturedRewards:
    """imagined_rewards on a GPU, captured in one CUDA graph per batch shape and replayed: the imagination's
    hundreds of small kernels launch as one (what ``compile`` means on a CUDA device). Called like
    imagined_rewards; the model, goal presence, shaping and its weight are part of each graph."""

    def __init__(self) -> None:
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], torch.Tensor]] = {}

    @staticmethod
    def _inputs(state: dict, actions: torch.Tensor, goal: torch.Tensor | None,
                anchor: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        named = {f"state.{k}": v for k, v in state.items()} | {"actions": actions}
        if goal is not None:
            named["goal"] = goal
        if anchor is not None:
            named["anchor.pred"], named["anchor.truth"] = anchor
        return named

    def __call__(self, model: WorldModel, state: dict[str, torch.Tensor], actions: torch.Tensor,
                 goal: torch.Tensor | None, shaping: Shaping | None,
                 shaping_weight: float, anchor: tuple[torch.Tensor, torch.Tensor] | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is not None:
            raise TeleworldError("a captured imagination draws no sampled futures; use samples=1")
        named = self._inputs(state, actions, goal, anchor)
        key = (id(model), id(shaping), shaping_weight, tuple((k, tuple(v.shape)) for k, v in named.items()))
        if key not in self.graphs:
            self.graphs[key] = self._capture(model, named, shaping, shaping_weight)
        graph, inputs, out = self.graphs[key]
        for name, value in named.items():
            inputs[name].copy_(value)
        graph.replay()
        return out.clone()

    @staticmethod
    def _capture(model: WorldModel, named: dict[str, torch.Tensor],
                 shaping: Shaping | None, shaping_weight: float
                 ) -> tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], torch.Tensor]:
        inputs = {k: v.clone() for k, v in named.items()}

        def run() -> torch.Tensor:
            state = {k.removeprefix("state."): v for k, v in inputs.items() if k.startswith("state.")}
            anchor = (inputs["anchor.pred"], inputs["anchor.truth"]) if "anchor.pred" in inputs else None
            return imagined_rewards(model, state, inputs["actions"], inputs.get("goal"), shaping, shaping_weight,
                                    anchor)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuBLAS handles and workspaces exist before capture
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = run()
        return graph, inputs, out


class ModelScorer:
    """Returns of candidates imagined by the world model from one latent state, summed from its reward head (plus
    the scene's shaping term on the proprio head, its positions anchored on the last observed proprio).

    ``compile``: run the imagination through torch.compile on a CPU, replay it from a captured CUDA graph on a GPU
    (one future per candidate only; sampled futures stay eager, their draws come from a generator)."""

    def __init__(self, model: WorldModel, goal: np.ndarray, samples: int, seed: int,
                 shaping: Shaping | None = None, shaping_weight: float = 0.0,
                 compile: bool = False):
        if model.reward_head is None:
            raise TeleworldError("this checkpoint has no reward head (trained before planning existed or with "
                                 "reward_weight=0): retrain it with `teleworld train` to plan with it")
        self.model, self.samples = model, samples
        device = next(model.parameters()).device
        self.goal = torch.as_tensor(goal, dtype=torch.float32, device=device)  # the reward head's input, if it has one
        self.generator = torch.Generator(device).manual_seed(seed) if samples > 1 else None
        self.state: dict[str, torch.Tensor] | None = None  # the current posterior, (1, ...)
        self.shaping = shaping if shaping is not None and shaping_weight and model.proprio_head is not None else None
        self.shaping_weight = shaping_weight
        self.proprio: torch.Tensor | None = None  # (1, P) the proprio observed with the current posterior
        self.rewards: Callable = imagined_rewards
        if compile and samples == 1:  # a GPU replays a captured CUDA graph; a CPU runs inductor's fused kernels
            self.rewards = CapturedRewards() if device.type == "cuda" else compiled_rewards()

    @torch.no_grad()
    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (N, H, A) -> returns (N, S): one batched imagination of N x S futures from ``state``."""
        n = len(actions)
        device = self.state["deter"].device
        rows = n * self.samples
        state = {k: v.expand(rows, *v.shape[1:]) for k, v in self.state.items()}
        actions = actions.to(device).repeat_interleave(self.samples, 0)  # rows: candidate-major
        anchor = None
        if self.shaping is not None:
            ref_pred = self.model.heads(self.model.rssm.feat(self.state), ("proprio",))["proprio"]
            anchor = (ref_pred, self.proprio)
        reward = self.rewards(self.model, state, actions, self.goal, self.shaping, self.shaping_weight, anchor,
                              self.generator)
        return reward.sum(1).view(n, self.samples).cpu()

    @torch.no_grad()
    def observe(self, frame: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor,
                extras: dict[str, np.ndarray] | None = None) -> None:
        """Filter the real frame (1, 3, S, S), reached by ``action`` (1, A), into the posterior; ``proprio`` (1, P):
        the state observed with it (the shaping term's anchor, and an input of a model that observes it); the
        scene's step ``extras`` are a state model's, not read here."""
        model = self.model
        state = self.state or model.rssm.initial(1, frame.device)
        embed = model.encode(frame[:, None], proprio[:, None])[:, 0]
        self.state, _ = model.rssm.obs_step(state, action, embed)
        self.proprio = proprio

    @torch.no_grad()
    def warm_up(self, candidates: int, steps: int) -> None:
        """Run the imagination once at the planner's two batch shapes (its candidates, then the one plan it scores
        last) from a blank state, so that compiling happens here and not inside a timed replanning step."""
        model, device = self.model, next(self.model.parameters()).device
        saved = self.state, self.proprio
        self.state = model.rssm.initial(1, device)
        self.proprio = torch.zeros(1, model.cfg.proprio_dim, device=device)
        for n in (candidates, 1):
            self(torch.zeros(n, steps, model.cfg.action_dim))
        self.state, self.proprio = saved

    @torch.no_grad()
    def imagine(self, actions: np.ndarray) -> torch.Tensor:
        """Features (1, H, F) of one plan imagined with the latent's expected value (what the video decodes)."""
        device = self.state["deter"].device
        act = torch.as_tensor(actions, dtype=torch.float32, device=device)[None]
        return self.model.rssm.feat(self.model.rssm.imagine(self.state, act, sample=False))


@torch.no_grad()
def observed_state(model: StateModel, frame: torch.Tensor, previous: torch.Tensor, proprio: torch.Tensor,
                   extras: dict[str, np.ndarray] | None = None) -> torch.Tensor:
    """The state (1, P) a state model imagines from: for a model that observes frames, what its encoder reads from
    ``frame`` and ``previous`` (each (1, 3, S, S); the simulator's state unread); else ``proprio`` (1, nq + nv)
    followed by the step ``extras`` the model was trained with."""
    if model.encoder is not None:
        return model.estimate(frame.float(), previous.float())
    names = model.cfg.extras
    missing = [name for name in names if name not in (extras or {})]
    if missing:
        raise TeleworldError(f"this state model reads the step extras {', '.join(missing)}, which the scene "
                             "does not give")
    tail = [torch.as_tensor(np.ravel(extras[name]), dtype=torch.float32)[None] for name in names]
    return torch.cat([proprio.float().cpu(), *tail], 1)


class StateScorer:
    """Returns of candidates imagined by a state-space model (train/state_model.py) from the observed state: its
    reward head plus the scene's shaping term, summed over the imagined states. The baseline of ModelScorer: the
    same planner and the same objective, with the simulator's state observed instead of the camera's frames, or read
    from the frames by the model's encoder (trained with ``--set observe=frames``)."""

    def __init__(self, model: StateModel, goal: np.ndarray, shaping: Shaping | None = None,
                 shaping_weight: float = 0.0):
        self.model = model
        self.goal = torch.as_tensor(goal, dtype=torch.float32)
        self.shaping = shaping if shaping_weight else None
        self.shaping_weight = shaping_weight
        self.proprio: torch.Tensor | None = None  # (1, P) the state observed now
        self.frame: torch.Tensor | None = None  # the last frame, for a model that observes frames

    def observe(self, frame: torch.Tensor, action: torch.Tensor | None, proprio: torch.Tensor,
                extras: dict[str, np.ndarray] | None = None) -> None:
        """Keep the observed state (observed_state), the frame before this one being the last observed; the action
        that led to them is not needed."""
        previous = frame if self.frame is None else self.frame
        self.frame = frame
        self.proprio = observed_state(self.model, frame, previous, proprio, extras)

    @torch.no_grad()
    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (N, H, A) -> returns (N, 1)."""
        states = self.model.imagine(self.proprio.expand(len(actions), -1), actions.float())
        reward = self.model.reward(states, self.goal)
        if self.shaping is not None:
            reward = reward + self.shaping_weight * self.shaping(states, self.goal)
        return reward.sum(1, keepdim=True)


class EnsembleScorer:
    """Several world models score the same candidates, each from its own posterior: returns (N, M x S), so the
    planner's ``spread_penalty`` penalises the members' disagreement as well as each one's sampled futures."""

    def __init__(self, members: list[ModelScorer] | list[StateScorer]):
        self.members = members

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(actions) for member in self.members], 1)


class SimulatorScorer:
    """The oracle: each candidate is stepped in the true scene from its current state (restored afterwards)."""

    def __init__(self, scene, shaping_weight: float = 0.0):
        self.scene = scene
        shaping = SHAPING.get(scene.name) if shaping_weight else None
        self.shaping = None if shaping is None else (lambda d: shaping_weight * float(
            shaping(torch.from_numpy(np.concatenate([d.qpos, d.qvel])), torch.from_numpy(scene.goal()))))

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (N, H, A) -> returns (N, 1), the scene's own reward summed over the steps each one reaches."""
        scene = self.scene
        saved = scene.get_state()
        acts = actions.numpy()
        out = np.zeros((len(acts), 1), np.float32)
        try:
            for i, seq in enumerate(acts):
                scene.set_state(saved)
                total = 0.0
                for a in seq:
                    scene.advance(a)
                    total += scene.reward() + (self.shaping(scene.data) if self.shaping is not None else 0.0)
                out[i, 0] = total
        finally:
            scene.set_state(saved)
        return torch.from_numpy(out)
