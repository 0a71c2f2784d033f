"""Trainer throughput, as ratios measured in one run.

1. steps/s with the real data path (background prefetch of random windows) vs one batch already resident in
   memory (goal >= 0.9x: the data path never limits training);
2. samples/s (sequence steps per second) of each config on this machine;
3. on a GPU, for small and medium: the whole step captured in a CUDA graph (run.cuda_graph) vs eager, bf16 vs fp32
   (goal >= 1.3x), the GPU vs the same machine's CPU on 2 threads.

Usage: python benchmarks/bench_train.py [--steps 12] [--data STORE] [--no-cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recorder import EpisodeStore  # noqa: E402
from train.configs import make_config  # noqa: E402
from train.dataset import DataSpec, EpisodeArrays, to_model_inputs  # noqa: E402
from train.loop import Prefetcher, build_model, train, window_length  # noqa: E402
from train.objectives import Objective  # noqa: E402
from train.step import GraphedStep, Step  # noqa: E402


def steps_per_second(step: Step, next_batch, steps: int, lr: float) -> float:
    """Time ``steps`` optimiser steps after two warm-up steps."""
    for i in range(steps + 2):
        if i == 2:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
        step(next_batch(i), lr)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def measure(data: EpisodeArrays, config: str, device: torch.device, steps: int, bf16: bool = False,
            compiled: bool = False, graphed: bool = False, resident: bool = False, batch: int = 0) -> float:
    """Steps/s of ``config``'s training step: eager, torch.compile'd parts, one captured CUDA graph, or both
    (``batch``: sequences per batch instead of the preset's)."""
    cfg = make_config(config, **({"batch_size": batch} if batch else {}))
    torch.manual_seed(0)
    model = build_model(cfg, data.spec).to(device).train()
    if compiled:
        model.encoder.compile()
        model.decoder.compile()
        model.rssm.img_step = torch.compile(model.rssm.img_step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.run.lr, eps=1e-6)
    windows = data.windows(window_length(cfg))
    cfg.run.steps = steps + 2
    objective = Objective(model, cfg.objective)
    prefetch = Prefetcher(data, windows, cfg, rank=0, pin=device.type == "cuda", needs=objective.needs)
    fixed = to_model_inputs(prefetch.get(0), device)

    def next_batch(i: int):
        return fixed if resident else to_model_inputs(prefetch.get(i), device)

    try:
        if graphed:
            step = GraphedStep(objective, optimizer, cfg.run.grad_clip, bf16, device, fixed)
        else:
            step = Step(objective, optimizer, cfg.run.grad_clip, bf16, device)
        return steps_per_second(step, next_batch, steps, cfg.run.lr)
    finally:
        prefetch.close()


def record(path: str) -> None:
    """Eight scripted push episodes: enough windows for throughput."""
    from teleop.devices.scripted import scripted_operator
    from teleop.loop import collect
    from teleop.scenes import load

    scene = load("push")
    with EpisodeStore.create(path, scene.info()) as store:
        collect(scene, scripted_operator(scene), store, episodes=8, steps=80)


def bench_cpu(data: EpisodeArrays, steps: int) -> None:
    cpu = torch.device("cpu")
    real = measure(data, "small", cpu, steps)
    resident = measure(data, "small", cpu, steps, resident=True)
    print(f"[cpu] small: real loader {real:.2f} steps/s, resident batch {resident:.2f} steps/s, "
          f"ratio {real / resident:.2f}x (goal >= 0.9x)")
    for config in ("tiny", "small", "medium"):
        cfg = make_config(config).run
        rate = measure(data, config, cpu, steps if config != "medium" else max(2, steps // 4))
        n = sum(p.numel() for p in build_model(make_config(config), data.spec).parameters())
        print(f"[cpu] {config:6s} {n / 1e6:5.2f} M params: {rate:6.2f} steps/s, "
              f"{rate * cfg.batch_size * cfg.seq_len:8.0f} samples/s (batch {cfg.batch_size}x{cfg.seq_len})")


def bench_gpu(data: EpisodeArrays, steps: int) -> None:
    """Per config: eager vs one captured CUDA graph (run.cuda_graph), fp32 vs bf16, the GPU vs this machine's CPU
    on 2 threads (what the 2-core development machine has), and the real loader vs a resident batch."""
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    print(f"[gpu] {torch.cuda.get_device_name()}")
    for config in ("small", "medium"):
        cfg = make_config(config).run
        samples = cfg.batch_size * cfg.seq_len
        rate = {(precision, mode): measure(data, config, gpu, steps, bf16=precision == "bf16",
                                           graphed=mode == "graph")
                for precision in ("fp32", "bf16") for mode in ("eager", "graph")}
        for (precision, mode), value in rate.items():
            print(f"[gpu] {config} {precision} {mode:5s}: {value:7.1f} steps/s, {value * samples:9.0f} samples/s")
        best = max(rate.values())
        print(f"[gpu] {config}: CUDA graph / eager {rate['fp32', 'graph'] / rate['fp32', 'eager']:.2f}x (fp32), "
              f"{rate['bf16', 'graph'] / rate['bf16', 'eager']:.2f}x (bf16); bf16 / fp32 "
              f"{rate['bf16', 'eager'] / rate['fp32', 'eager']:.2f}x eager, "
              f"{rate['bf16', 'graph'] / rate['fp32', 'graph']:.2f}x graphed (goal >= 1.3x)")
        real = measure(data, config, gpu, steps, bf16=True, graphed=True)
        resident = measure(data, config, gpu, steps, bf16=True, graphed=True, resident=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        on_cpu = measure(data, config, cpu, max(1, steps // 24))
        torch.set_num_threads(threads)
        print(f"[gpu] {config}: real loader / resident batch {real / resident:.2f}x (graphed bf16); fastest GPU "
              f"step / this machine's CPU on 2 threads ({on_cpu:.2f} steps/s): {best / on_cpu:.1f}x")
    fp32, bf16 = (measure(data, "medium", gpu, steps, bf16=b, graphed=True, batch=256) for b in (False, True))
    print(f"[gpu] medium at batch 256 (graphed): fp32 {fp32:.1f}, bf16 {bf16:.1f} steps/s, bf16 / fp32 "
          f"{bf16 / fp32:.2f}x, {bf16 * 256 * make_config('medium').run.seq_len:.0f} samples/s in bf16")
    graphed = measure(data, "small", gpu, steps, bf16=True, graphed=True)
    both = measure(data, "small", gpu, steps, bf16=True, graphed=True, compiled=True)
    print(f"[gpu] small bf16: torch.compile'd parts inside the graph {both:.1f} steps/s, {both / graphed:.2f}x the "
          "graph alone")
    eager, graphed = (trainer_rate(data, "small", gpu, 10 * steps, graph) for graph in (False, True))
    print(f"[gpu] `teleworld train` small, {10 * steps} steps end to end (bf16; capture, calibration and checkpoint "
          f"included): eager {eager:.1f} steps/s, run.cuda_graph {graphed:.1f} steps/s ({graphed / eager:.2f}x)")


def trainer_rate(data: EpisodeArrays, config: str, device: torch.device, steps: int, graph: bool) -> float:
    """Steps/s of the trainer itself (train.loop.train), from its first step to its final checkpoint."""
    cfg = make_config(config, steps=steps, eval_every=0, checkpoint_every=0, cuda_graph="on" if graph else "off")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = train(data, cfg, out, device, show_progress=False)
        return summary["steps"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--data", help="an episode store to read instead of recording eight push episodes")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU measurements")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or f"{tmp}/b.zarr"
        if not args.data:
            record(path)
        store = EpisodeStore.open(path)
        data = EpisodeArrays(store, DataSpec.from_store(store))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        if not args.no_cpu:
            bench_cpu(data, args.steps)
        if torch.cuda.is_available():
            bench_gpu(data, args.steps * 4)
        else:
            print("[gpu] no CUDA device: bf16 and torch.compile ratios skipped")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
