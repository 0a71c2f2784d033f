"""Teleop loop at 50 Hz on push at 128x128: recording on vs off, measured in the same run.

Runs the real TeleopSession (dummy-driver window, HUD, scripted push expert) in alternating blocks with
recording off and on, and prints ratios: recording overhead / step budget (loop work on minus off, and the
main-thread cost of recording a step measured directly), writer-thread CPU / budget, achieved rate / target,
p50 / p99 start-of-step jitter, overruns. About 25 s.

    python benchmarks/bench_teleop.py [--steps 250] [--blocks 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from recorder import EpisodeStore  # noqa: E402
from teleop.bindings import Command  # noqa: E402
from teleop.devices.scripted import PushExpert  # noqa: E402
from teleop.loop import step_record  # noqa: E402
from teleop.pacer import Pacer, jitter_ms  # noqa: E402
from teleop.scenes import load  # noqa: E402
from teleop.session import TeleopSession  # noqa: E402
from teleop.window import Window  # noqa: E402

RATE, SIZE = 50.0, 128


def run_block(session: TeleopSession, steps: int, record: bool) -> dict:
    """``steps`` ticks with a fresh pacer; returns its timing."""
    if record:
        session.handle(Command.RECORD)
    session.pacer = Pacer(RATE)
    start = time.monotonic()
    for _ in range(steps):
        session.tick()
    elapsed = time.monotonic() - start
    if record:
        session.handle(Command.SAVE)
    pacer = session.pacer
    return {"busy": pacer.busy, "lateness": pacer.lateness, "overruns": pacer.overruns, "rate": steps / elapsed}


def enqueue_cost_ms(session: TeleopSession, steps: int = 300) -> float:
    """Main-thread time of recording one step (split the observation, queue it), measured directly."""
    session.handle(Command.RECORD)
    action = np.zeros(session.scene.action_spec.size, np.float32)
    start = time.perf_counter()
    for _ in range(steps):
        session.writer.add(*step_record(session.obs, action, time.monotonic()))
    cost = (time.perf_counter() - start) / steps
    session.handle(Command.DISCARD)
    return 1e3 * cost


def print_modes(off: dict, on: dict, period_ms: float) -> None:
    """The loop's figures with recording off and on, side by side."""
    print(f"{'':24s}{'recording off':>15s}{'recording on':>15s}")
    print(f"{'work per step / budget':24s}{off['busy_ms'] / period_ms:15.3f}{on['busy_ms'] / period_ms:15.3f}")
    print(f"{'achieved rate / target':24s}{off['rate_ratio']:15.3f}{on['rate_ratio']:15.3f}")
    print(f"{'jitter p50 (ms)':24s}{off['p50']:15.3f}{on['p50']:15.3f}")
    print(f"{'jitter p99 (ms)':24s}{off['p99']:15.3f}{on['p99']:15.3f}")
    print(f"{'overruns':24s}{off['overruns']:15d}{on['overruns']:15d}")


def summary(blocks: list[dict]) -> dict:
    lateness = [x for b in blocks for x in b["lateness"]]
    p50, p99 = jitter_ms(lateness)
    return {
        "busy_ms": 1e3 * float(np.mean([x for b in blocks for x in b["busy"]])),
        "rate_ratio": float(np.mean([b["rate"] for b in blocks])) / RATE,
        "p50": p50,
        "p99": p99,
        "overruns": sum(b["overruns"] for b in blocks),
        "steps": len(lateness),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250, help="ticks per block")
    parser.add_argument("--blocks", type=int, default=2, help="off/on block pairs")
    args = parser.parse_args()

    scene = load("push", image_size=(SIZE, SIZE), control_rate=RATE)
    window = Window("bench", view_size=512)
    window.open()
    with tempfile.TemporaryDirectory() as tmp, EpisodeStore.create(Path(tmp) / "b.zarr", scene.info()) as store:
        session = TeleopSession(scene, PushExpert(scene), store, window)
        run_block(session, 50, record=False)  # warm-up: renderer, fonts, zarr
        results = {False: [], True: []}
        for _ in range(args.blocks):
            for record in (False, True):
                results[record].append(run_block(session, args.steps, record))
        direct_ms = enqueue_cost_ms(session)
        start = time.monotonic()
        session.close()
        drain = time.monotonic() - start
        writer_ms = 1e3 * session.writer.cpu_seconds / sum(len(b["busy"]) for b in results[True])
        episodes = store.num_episodes
    window.close()

    off, on = summary(results[False]), summary(results[True])
    period_ms = 1e3 / RATE
    print(f"teleop loop, push {SIZE}x{SIZE}, target {RATE:g} Hz ({period_ms:g} ms budget), "
          f"{off['steps']} steps per mode, {episodes} episodes recorded; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other processes share them)")
    print_modes(off, on, period_ms)
    overhead = (on["busy_ms"] - off["busy_ms"]) / period_ms
    print(f"recording overhead in the loop / step budget: {overhead:.3f} (goal <= 0.05); "
          f"work on / off: {on['busy_ms'] / off['busy_ms']:.3f}")
    print(f"recording cost in the loop, measured directly / step budget: {direct_ms / period_ms:.4f}")
    print(f"writer thread CPU per recorded step / step budget: {writer_ms / period_ms:.3f}; "
          f"queue waits: {session.writer.queue_waits}; final drain {drain:.2f} s")


if __name__ == "__main__":
    main()
