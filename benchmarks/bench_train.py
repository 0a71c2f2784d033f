"""Trainer throughput, as ratios measured in one run.

1. steps/s with the real data path (background prefetch of random windows) vs one batch already resident in
   memory (goal >= 0.9x: the data path never limits training);
2. samples/s (sequence steps per second) of each config on this machine;
3. on a GPU: bf16 vs fp32 and compiled vs eager.

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
from train.loop import Prefetcher, build_model, window_length  # noqa: E402
from train.objectives import Objective  # noqa: E402


def steps_per_second(objective, optimizer, next_batch, steps: int, autocast) -> float:
    """Time ``steps`` optimiser steps after two warm-up steps."""
    for i in range(steps + 2):
        if i == 2:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = next_batch(i)
        with autocast():
            loss, _ = objective(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def measure(data: EpisodeArrays, config: str, device: torch.device, steps: int, bf16: bool = False,
            compiled: bool = False, resident: bool = False) -> float:
    cfg = make_config(config)
    torch.manual_seed(0)
    model = build_model(cfg, data.spec).to(device).train()
    if compiled:
        model.encoder.compile()
        model.decoder.compile()
        model.rssm.img_step = torch.compile(model.rssm.img_step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.run.lr)
    windows = data.windows(window_length(cfg))
    cfg.run.steps = steps + 2
    objective = Objective(model, cfg.objective)
    prefetch = Prefetcher(data, windows, cfg, rank=0, pin=device.type == "cuda", needs=objective.needs)
    fixed = to_model_inputs(prefetch.get(0), device)

    def next_batch(i: int):
        return fixed if resident else to_model_inputs(prefetch.get(i), device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    try:
        return steps_per_second(objective, optimizer, next_batch, steps, autocast)
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
    gpu = torch.device("cuda")
    print(f"[gpu] {torch.cuda.get_device_name()}")
    for config in ("small", "medium", "large"):
        cfg = make_config(config).run
        fp32 = measure(data, config, gpu, steps)
        bf16 = measure(data, config, gpu, steps, bf16=True)
        comp = measure(data, config, gpu, steps, bf16=True, compiled=True)
        real = measure(data, config, gpu, steps, bf16=True)
        res = measure(data, config, gpu, steps, bf16=True, resident=True)
        print(f"[gpu] {config}: fp32 {fp32:.1f}, bf16 {bf16:.1f} ({bf16 / fp32:.2f}x), "
              f"bf16+compile {comp:.1f} ({comp / bf16:.2f}x vs eager) steps/s, "
              f"{bf16 * cfg.batch_size * cfg.seq_len:.0f} samples/s in bf16; real loader / resident {real / res:.2f}x")


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
