"""CPU training beside another job, as ratios measured in one run.

Trains ``small`` for a few steps in a fresh process, alone and beside one CPU-bound process (a busy loop), with
teleworld's thread settings (threads = usable CPUs, OpenMP threads that sleep instead of spinning when they wait)
and with torch's defaults (spinning OpenMP threads). Prints steps/s and the slowdown beside the other job; on two
cores a fair share is about 0.5-0.67x, a spinning barrier can fall to 0.1x.

Usage: python benchmarks/bench_threads.py [--steps 12]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SNIPPET = """
import sys, time
from recorder import EpisodeStore
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train
store = EpisodeStore.open(sys.argv[1])
data = EpisodeArrays(store, DataSpec.from_store(store))
cfg = make_config("small", steps=int(sys.argv[3]), eval_every=0, checkpoint_every=0)
result = train(data, cfg, sys.argv[2], "cpu", show_progress=False)
print(result["threads"], result["steps"] / result["seconds"])
"""
BUSY = "while True: pass"
SETTINGS = {
    "teleworld": {},  # what `teleworld train` does by itself
    "torch defaults": {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": str(os.cpu_count())},
}


def rate(store: str, out: str, steps: int, env: dict) -> tuple[str, float]:
    """(threads, steps/s) of one training in a fresh process."""
    result = subprocess.run([sys.executable, "-c", TRAIN_SNIPPET, store, out, str(steps)], env=env, cwd=ROOT,
                            capture_output=True, text=True, check=True)
    threads, steps_per_s = result.stdout.split()[-2:]
    return threads, float(steps_per_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("MUJOCO_GL", "egl")
    from recorder import EpisodeStore
    from teleop.devices.scripted import scripted_operator
    from teleop.loop import collect
    from teleop.scenes import load

    with tempfile.TemporaryDirectory() as tmp:
        store = f"{tmp}/push.zarr"
        scene = load("push")
        with EpisodeStore.create(store, scene.info()) as writer:
            collect(scene, scripted_operator(scene), writer, 12, 60, 0)
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        print(f"small, {args.steps} steps per measurement, {os.cpu_count()} CPUs")
        for name, extra in SETTINGS.items():
            env = {**base, **extra}
            threads, alone = rate(store, f"{tmp}/alone", args.steps, env)
            busy = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                _, beside = rate(store, f"{tmp}/beside", args.steps, env)
            finally:
                busy.kill()
            print(f"{name:15s} threads {threads}: alone {alone:.2f} steps/s, beside a busy process {beside:.2f} "
                  f"steps/s, ratio {beside / alone:.2f}x")


if __name__ == "__main__":
    main()
