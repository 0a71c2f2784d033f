"""Planning speed, as ratios measured in one run.

1. one replanning step of `teleworld plan` on push (256 candidates x horizon 16, CEM, warm start shifted, the
   reward head plus push's shaping term on the proprio head, as `plan` scores): p50/p99 ms with its 3 iterations
   on one thread (the baseline), then with 1 iteration (classical MPPI-style replanning: one sampling round per
   control step, the warm start carrying the rest) and on every thread this process may use, each as a ratio of
   the baseline's p50 (goal for `small` on the 2-core CPU: <= 50 ms p50); then the same four with the
   imagination compiled (`plan --compile`: torch.compile on a CPU, a captured CUDA graph on a GPU), after its
   one-off compile (timed). On a GPU the baseline is the eager step with 3 iterations;
2. the arithmetic: floating-point operations of one batched imagination (torch's FLOP counter) and the rate the
   CPU achieved on them, which says how far a faster implementation could go on this machine;
3. imagination throughput: candidate-steps/s when every candidate is imagined in one batched call vs the model's
   single-sequence step (batch 1, the same latent update) as the baseline, printed as a ratio;
4. the same replanning step with a state model (`train --config state`, an MLP on concat(qpos, qvel); untrained,
   timing only), observing the state or, through its encoder, the frames (`--set observe=frames`), with 3
   iterations and with 1 on one thread, as a ratio of the baseline's p50;
5. observing one frame: the state model's encoder against the image model's posterior step (the baseline).

Usage: python benchmarks/bench_plan.py [--config small] [--model RUN] [--repeats 30] [--device cpu|cuda]
                                      [--data STORE]  (a recorded push step instead of the simulator's)
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from recorder import EpisodeStore  # noqa: E402
from replay.planning import SHAPING, ModelScorer, Planner, PlannerConfig, StateScorer  # noqa: E402
from train.checkpoint import load_model  # noqa: E402
from train.configs import make_config  # noqa: E402
from train.dataset import DataSpec  # noqa: E402
from teleworld.cpu import cpu_threads  # noqa: E402
from train.loop import build_model  # noqa: E402
from train.state_model import StateModel, StateModelConfig  # noqa: E402


@dataclass
class Start:
    """What the planner starts from: the data's shapes and one observed push step."""

    spec: DataSpec
    frame: np.ndarray  # (S, S, 3) uint8
    proprio: np.ndarray  # concat(qpos, qvel)
    goal: np.ndarray


def simulated_start() -> Start:
    """A push scene reset with a seed no run trained on."""
    from teleop.scenes import load  # the simulator only here: --data runs where MuJoCo cannot render

    scene = load("push")
    info, obs = scene.info(), scene.reset(100_000)
    spec = DataSpec(scene="push", camera="overhead", image_size=64, action_names=info["action_spec"]["names"],
                    proprio_dim=info["nq"] + info["nv"], contact_dim=len(info["contact_groups"]))
    start = Start(spec, obs.frames["overhead"], np.concatenate([obs.qpos, obs.qvel]), scene.goal())
    scene.close()
    return start


def recorded_start(path: str) -> Start:
    """The first step of a recorded push store's first episode, and its goal."""
    store = EpisodeStore.open(path)
    spec = DataSpec.from_store(store)
    step = store.episode(0, [f"image_{spec.camera}", "qpos", "qvel"])
    goal = np.asarray(store.episode_info(0)["goal"], np.float64)
    return Start(spec, step[f"image_{spec.camera}"][0], np.concatenate([step["qpos"][0], step["qvel"][0]]), goal)


def scorer_for(model, start: Start, device: torch.device, compile: bool = False) -> ModelScorer:
    """A scorer whose latent is the posterior of the start's frame, scoring as `teleworld plan` does
    (``compile``: as `plan --compile` does)."""
    scorer = ModelScorer(model, start.goal, samples=1, seed=0, shaping=SHAPING["push"],
                         shaping_weight=PlannerConfig().shaping, compile=compile)
    with torch.no_grad():
        scorer.observe(frame_of(start, device), torch.zeros(1, 2, device=device),
                       torch.from_numpy(start.proprio).float().to(device)[None])
    return scorer


def frame_of(start: Start, device: torch.device) -> torch.Tensor:
    """The start's frame as a model observes it: (1, 3, S, S) float in [0, 1]."""
    return torch.from_numpy(start.frame).to(device).permute(2, 0, 1).float().div(255)[None]


def observe_ms(scorer: ModelScorer | StateScorer, start: Start, device: torch.device, repeats: int) -> float:
    """p50 milliseconds of giving ``scorer`` one more real frame (the planner does it every control step)."""
    frame, action = frame_of(start, device), torch.zeros(1, 2, device=device)
    proprio = torch.from_numpy(start.proprio).float().to(device)[None]
    times = [timed_ms(lambda: scorer.observe(frame, action, proprio), device) for _ in range(repeats + 2)]
    return float(np.percentile(times[2:], 50))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn, device: torch.device) -> float:
    """Milliseconds of one call of ``fn``."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def replanning_ms(scorer: ModelScorer | StateScorer, cfg: PlannerConfig, repeats: int, device: torch.device
                  ) -> np.ndarray:
    """Milliseconds of each replanning step (after two warm-up steps), warm-started as the episode loop does."""
    planner = Planner(cfg, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), seed=0)
    times = []
    for i in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        planner.plan(scorer)
        sync(device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
        planner.shift(1)
    return np.array(times)


@torch.no_grad()
def imagination_rate(scorer: ModelScorer, candidates: int, horizon: int, repeats: int, device: torch.device) -> float:
    """Candidate-steps/s when ``candidates`` sequences are imagined in one call (1: the single-sequence baseline,
    through the same latent update and reward head)."""
    actions = torch.rand(candidates, horizon, 2) * 2 - 1
    for _ in range(2):
        scorer(actions)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        scorer(actions)
    sync(device)
    return repeats * candidates * horizon / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="preset of a freshly built model (timing only)")
    parser.add_argument("--model", default=None, help="a trained run instead (a push model with a reward head)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", help="start from a recorded push store's first step instead of the simulator")
    args = parser.parse_args()
    device = torch.device(args.device)
    start = recorded_start(args.data) if args.data else simulated_start()
    if args.model:
        model, _, _ = load_model(args.model, device)
        name = args.model
    else:
        torch.manual_seed(0)
        model = build_model(make_config(args.config), start.spec, goal_dim=2).to(device).eval()
        name = args.config
    scorer = scorer_for(model, start, device)
    base = PlannerConfig(candidates=args.candidates, horizon=args.horizon)
    print(f"{name} on {device}, {sum(p.numel() for p in model.parameters()):,} parameters; planner "
          f"{base.planner}, {base.candidates} candidates x horizon {base.horizon}")
    threads = sorted({1, cpu_threads()}) if device.type == "cpu" else [torch.get_num_threads()]
    baseline = None
    for compiled in (False, True):
        timed = scorer
        if compiled:
            began = time.perf_counter()
            timed = scorer_for(model, start, device, compile=True)
            timed.warm_up(base.candidates, base.horizon)
            how = "CUDA graph capture" if device.type == "cuda" else "torch.compile"
            print(f"{how} of the imagination (plan --compile): {time.perf_counter() - began:.1f} s, once")
        for iterations in (base.iterations, 1):
            for n in threads:
                torch.set_num_threads(n)
                cfg = PlannerConfig(**{**base.to_dict(), "iterations": iterations})
                ms = replanning_ms(timed, cfg, args.repeats, device)
                p50 = float(np.percentile(ms, 50))
                baseline = baseline or p50
                print(f"one replanning step, {iterations} iteration(s), {n} thread(s)"
                      f"{', compiled' if compiled else ''}: p50 {p50:.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
                      f"{baseline / p50:.2f}x the baseline's speed ({'meets' if p50 <= 50 else 'misses'} the 50 ms "
                      "p50 goal)")
    torch.set_num_threads(threads[0])
    actions = torch.rand(base.candidates, base.horizon, 2) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        scorer(actions)
    call_ms = float(np.median([timed_ms(lambda: scorer(actions), device) for _ in range(5)]))
    flops = counter.get_total_flops()
    print(f"one batched imagination ({base.candidates} x {base.horizon}, 1 thread): {flops / 1e9:.2f} GFLOP in "
          f"{call_ms:.1f} ms = {flops / call_ms / 1e6:.1f} GFLOP/s; a replanning step does {base.iterations} of them")
    single = imagination_rate(scorer, 1, args.horizon, args.repeats, device)
    batched = imagination_rate(scorer, args.candidates, args.horizon, max(3, args.repeats // 3), device)
    print(f"imagination: {batched:,.0f} candidate-steps/s batched vs {single:,.0f} one sequence at a time "
          f"({batched / single:.1f}x)")
    torch.manual_seed(0)
    state_scorers = {}
    for observe in ("state", "frames"):
        cfg = StateModelConfig(start.spec.proprio_dim, len(start.spec.action_names), 2, observe=observe)
        state = state_scorers[observe] = StateScorer(StateModel(cfg).eval(), start.goal.astype(np.float32),
                                                     SHAPING["push"], PlannerConfig().shaping)
        state.observe(frame_of(start, torch.device("cpu")), None, torch.from_numpy(start.proprio).float()[None])
        for iterations in (base.iterations, 1):
            cfg = PlannerConfig(**{**base.to_dict(), "iterations": iterations})
            ms = replanning_ms(state, cfg, args.repeats, torch.device("cpu"))
            p50 = float(np.percentile(ms, 50))
            print(f"one replanning step with a state model observing its {observe}, {iterations} iteration(s), "
                  f"1 thread, cpu: p50 {p50:.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, {baseline / p50:.2f}x the "
                  "image model's baseline speed")
    image_ms = observe_ms(scorer, start, device, args.repeats)
    frames_ms = observe_ms(state_scorers["frames"], start, torch.device("cpu"), args.repeats)
    print(f"observing one frame, 1 thread: the image model's posterior step p50 {image_ms:.2f} ms (the baseline), "
          f"the state model's encoder p50 {frames_ms:.2f} ms ({image_ms / frames_ms:.2f}x its speed)")

if __name__ == "__main__":
    main()
