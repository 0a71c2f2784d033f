"""Episodes/min of scripted generation against the bare simulate+render loop of the same scene.

    python benchmarks/bench_generate.py [--scene push] [--episodes 48] [--steps 120] [--image-size 64]

Rows, all on the same seeds and operator:
  bare     simulate + render in this process, nothing kept (the ceiling)
  inline   the same plus stacking and committing each episode to Zarr, in this process (recording cost, one core)
  W=1, W=2 `generate_episodes` end to end: spawned workers (start-up included) and this process as the writer
Goals (issue 7): recording and bookkeeping cost <= 15 % (W=1 vs bare); W=2 >= 1.7x W=1 on 2 cores.
Takes about a minute on 2 cores; other load on the machine depresses the W=2 ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from recorder import EpisodeStore
from teleop.devices.scripted import mixed_operator
from teleop.generate import Job, build_scene, generate_episodes, simulate
from teleop.loop import run_episode


def bare(job: Job, seeds: list[int]) -> float:
    """Seconds to simulate and render ``seeds`` with nothing recorded."""
    scene = build_scene(job)
    operator = mixed_operator(scene, job.expert_ratio)
    run_episode(scene, operator, None, 2, seeds[0])  # warm up: create the renderer
    start = time.perf_counter()
    for seed in seeds:
        run_episode(scene, operator, None, job.steps, seed)
    return time.perf_counter() - start


def inline(job: Job, seeds: list[int], path: Path) -> float:
    """Seconds to simulate, stack and commit ``seeds`` in this process."""
    simulate(job, seeds[0])  # warm up the per-process scene, like bare()
    with EpisodeStore.create(path, build_scene(job).info()) as store:
        start = time.perf_counter()
        for seed in seeds:
            episode = simulate(job, seed)
            store.write_episode(episode.steps, episode.contacts, {"seed": seed, **episode.info})
        return time.perf_counter() - start


def parallel(job: Job, seeds: list[int], workers: int, path: Path) -> float:
    """Seconds for generate_episodes with ``workers`` local workers, start-up included."""
    with EpisodeStore.create(path, build_scene(job).info()) as store:
        start = time.perf_counter()
        lost = generate_episodes(store, job, seeds, workers)
        elapsed = time.perf_counter() - start
        assert not lost and store.num_episodes == len(seeds)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="push")
    parser.add_argument("--episodes", type=int, default=48)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    job = Job(args.scene, args.steps, args.image_size)
    seeds = list(range(args.episodes))
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {
            "bare": bare(job, seeds),
            "inline": inline(job, seeds, Path(tmp) / "inline.zarr"),
            "W=1": parallel(job, seeds, 1, Path(tmp) / "w1.zarr"),
            "W=2": parallel(job, seeds, 2, Path(tmp) / "w2.zarr"),
        }
    rate = {name: 60 * len(seeds) / s for name, s in seconds.items()}
    print(f"{args.scene}: {len(seeds)} episodes x {args.steps} steps, {args.image_size}x{args.image_size}")
    for name, per_min in rate.items():
        print(f"  {name:7s} {per_min:8.1f} episodes/min  ({seconds[name]:.1f} s)")
    print(f"recording cost, inline vs bare: {1 - rate['inline'] / rate['bare']:6.1%}")
    print(f"recording cost, W=1 vs bare:    {1 - rate['W=1'] / rate['bare']:6.1%}   (goal <= 15 %)")
    print(f"speed-up, W=2 vs W=1:           {rate['W=2'] / rate['W=1']:6.2f}x  (goal >= 1.7x on 2 cores)")


if __name__ == "__main__":
    main()
