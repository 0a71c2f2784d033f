"""Trainer throughput, as ratios measured in one run.

1. steps/s with the real data path (background prefetch of random windows) vs one batch already resident in
   memory (goal >= 0.9x: the data path never limits training);
2. samples/s (sequence steps per second) of each config on this machine;
3. on a GPU: bf16 vs fp32 and compiled vs eager.

Usage: python benchmarks/bench_train.py [--steps 12]
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
from teleop.devices.scripted import scripted_operator  # noqa: E402
from teleop.loop import collect  # noqa: E402
from teleop.scenes import load  # noqa: E402
from train.configs import make_config  # noqa: E402
from train.dataset import DataSpec, EpisodeArrays, to_model_inputs  # noqa: E402
from train.loop import Prefetcher, build_model  # noqa: E402


def steps_per_second(model, optimizer, next_batch, steps: int, autocast) -> float:
    """Time ``steps`` optimiser steps after two warm-up steps."""
    for i in range(steps + 2):
        if i == 2:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = next_batch(i)
        with autocast():
            loss, _ = model(batch)
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    windows = data.windows(cfg.seq_len)
    cfg.steps = steps + 2
    prefetch = Prefetcher(data, windows, cfg, rank=0, pin=device.type == "cuda")
    fixed = to_model_inputs(prefetch.get(0), device)

    def next_batch(i: int):
        return fixed if resident else to_model_inputs(prefetch.get(i), device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    try:
        return steps_per_second(model, optimizer, next_batch, steps, autocast)
    finally:
        prefetch.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scene = load("push")
        with EpisodeStore.create(f"{tmp}/b.zarr", scene.info()) as store:
            collect(scene, scripted_operator(scene), store, episodes=8, steps=80)
        store = EpisodeStore.open(f"{tmp}/b.zarr")
        data = EpisodeArrays(store, DataSpec.from_store(store))
        cpu = torch.device("cpu")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        real = measure(data, "small", cpu, args.steps)
        resident = measure(data, "small", cpu, args.steps, resident=True)
        print(f"[cpu] small: real loader {real:.2f} steps/s, resident batch {resident:.2f} steps/s, "
              f"ratio {real / resident:.2f}x (goal >= 0.9x)")
        for config in ("tiny", "small", "medium"):
            cfg = make_config(config)
            steps = args.steps if config != "medium" else max(2, args.steps // 4)
            rate = measure(data, config, cpu, steps)
            n = sum(p.numel() for p in build_model(cfg, data.spec).parameters())
            print(f"[cpu] {config:6s} {n / 1e6:5.2f} M params: {rate:6.2f} steps/s, "
                  f"{rate * cfg.batch_size * cfg.seq_len:8.0f} samples/s (batch {cfg.batch_size}x{cfg.seq_len})")
        if not torch.cuda.is_available():
            print("[gpu] no CUDA device: bf16 and torch.compile ratios skipped")
            return
        gpu = torch.device("cuda")
        for config in ("small", "medium"):
            fp32 = measure(data, config, gpu, args.steps * 4)
            bf16 = measure(data, config, gpu, args.steps * 4, bf16=True)
            comp = measure(data, config, gpu, args.steps * 4, bf16=True, compiled=True)
            real = measure(data, config, gpu, args.steps * 4, bf16=True)
            res = measure(data, config, gpu, args.steps * 4, bf16=True, resident=True)
            print(f"[gpu] {config}: fp32 {fp32:.1f}, bf16 {bf16:.1f} ({bf16 / fp32:.2f}x), "
                  f"bf16+compile {comp:.1f} ({comp / bf16:.2f}x vs eager) steps/s; "
                  f"real loader / resident {real / res:.2f}x")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
