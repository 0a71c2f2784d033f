"""Episodes/min of scripted generation against the bare simulate+render loop of the same scene.

    python benchmarks/bench_generate.py [--scene push] [--episodes 32] [--rounds 2] [--steps 120] [--image-size 64]

Variants, all on the same seeds and operator:
  bare     simulate + render in this process, nothing kept (the ceiling)
  inline   the same plus stacking and committing each episode to Zarr, in this process
  W=1, W=2 `generate_episodes`: spawned workers simulate, this process writes
Columns: wall-clock episodes/min end to end (worker start-up included) and steady (from the moment every
worker has delivered its first episode), and CPU seconds per episode over all processes (start-up included),
which other load on a shared machine hardly moves. Variants run interleaved; each keeps its best round.
Goals: recording cost <= 10 % (issue 25; W=1 vs bare, and the seconds inline spends in write_episode per bare
episode, which other load hardly blurs); W=2 >= 1.7x W=1 on 2 cores (issue 7).
About 1.5 minutes on 2 cores; other load on the machine depresses the wall-clock ratios, the W=2 one most.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Callable

from recorder import EpisodeStore
from teleop.devices.scripted import mixed_operator
from teleop.generate import Job, build_scene, generate_episodes, simulate
from teleop.loop import run_episode


def bare(job: Job, seeds: list[int], _path: Path) -> list[float]:
    """Commit-like timestamps of simulating and rendering ``seeds`` with nothing recorded."""
    scene = build_scene(job)
    operator = mixed_operator(scene, job.expert_ratio)
    done = []
    for seed in seeds:
        run_episode(scene, operator, None, job.steps, seed)
        done.append(time.perf_counter())
    return done


WRITING: list[float] = []  # seconds inline spent in write_episode (and the store's close), per run


def inline(job: Job, seeds: list[int], path: Path) -> list[float]:
    """Timestamps of simulating, stacking and committing ``seeds`` one by one in this process."""
    done, writing = [], 0.0
    with EpisodeStore.create(path, build_scene(job).info()) as store:
        for seed in seeds:
            episode = simulate(job, seed)
            t0 = time.perf_counter()
            store.write_episode(episode.steps, episode.contacts, {"seed": seed, **episode.info})
            done.append(time.perf_counter())
            writing += done[-1] - t0
        t0 = time.perf_counter()
    WRITING.append(writing + time.perf_counter() - t0)
    return done


def parallel(workers: int) -> Callable[[Job, list[int], Path], list[float]]:
    """A variant that runs generate_episodes with ``workers`` local workers."""

    def run(job: Job, seeds: list[int], path: Path) -> list[float]:
        done: list[float] = []
        with EpisodeStore.create(path, build_scene(job).info()) as store:
            lost = generate_episodes(store, job, seeds, workers, on_episode=lambda _: done.append(time.perf_counter()))
            assert not lost and store.num_episodes == len(seeds)
        return done

    return run


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the workers), s."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(variant, job: Job, seeds: list[int], path: Path, warm_up: int) -> tuple[float, float, float]:
    """(end-to-end episodes/min, steady episodes/min, CPU s per episode) of one run."""
    start, cpu = time.perf_counter(), cpu_seconds()
    done = variant(job, seeds, path)
    cpu = (cpu_seconds() - cpu) / len(seeds)
    steady = (len(seeds) - warm_up) / (done[-1] - done[warm_up - 1])
    return 60 * len(seeds) / (done[-1] - start), 60 * steady, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="push")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    job = Job(args.scene, args.steps, args.image_size)
    seeds = list(range(args.episodes))
    variants = {"bare": (bare, 1), "inline": (inline, 1), "W=1": (parallel(1), 1), "W=2": (parallel(2), 2)}
    best = {name: (0.0, 0.0, float("inf")) for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (variant, warm_up) in variants.items():
                e2e, steady, cpu = measure(variant, job, seeds, Path(tmp) / f"{name}-{r}.zarr", warm_up)
                best[name] = max(best[name][0], e2e), max(best[name][1], steady), min(best[name][2], cpu)
    print(f"{args.scene}: {len(seeds)} episodes x {args.steps} steps, {args.image_size}x{args.image_size}, "
          f"best of {args.rounds} rounds")
    print(f"  {'':7s} {'end to end':>11s} {'steady':>8s}  episodes/min   CPU s/episode")
    for name, (e2e, steady, cpu) in best.items():
        print(f"  {name:7s} {e2e:11.1f} {steady:8.1f}  {'':12s}   {cpu:.3f}")
    b, w1, w2 = best["bare"], best["W=1"], best["W=2"]
    write_ms = min(WRITING) / len(seeds) * 1e3
    print(f"recording cost, inline write_episode per episode: {write_ms:5.1f} ms = "
          f"{write_ms / (60e3 / b[1]):6.1%} of a bare episode (goal <= 10 %)")
    print(f"recording cost, W=1 vs bare, CPU per episode:    {w1[2] / b[2] - 1:6.1%}   (goal <= 10 %)")
    print(f"recording cost, W=1 vs bare, steady wall clock:  {1 - w1[1] / b[1]:6.1%}")
    print(f"speed-up, W=2 vs W=1, steady wall clock:         {w2[1] / w1[1]:6.2f}x  (goal >= 1.7x on 2 free cores)")
    print(f"speed-up, W=2 vs W=1, end to end:                {w2[0] / w1[0]:6.2f}x")


if __name__ == "__main__":
    main()
