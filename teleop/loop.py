"""The control loop: observe, ask the device, apply, record. Scripted collection is the loop without a clock."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recorder import EpisodeStore, EpisodeWriter
from recorder.schema import image_key
from recorder.background_writer import BackgroundWriter
from teleop.devices.base import Device
from teleop.pacer import Pacer, jitter_ms
from teleop.scenes.base import Observation, Scene


def step_record(obs: Observation, action: np.ndarray, wall_time: float) -> tuple[dict, dict]:
    """Split an observation and the action applied after it into the recorder's step and contact rows."""
    step = {image_key(cam): frame for cam, frame in obs.frames.items()}
    step.update(
        action=action,
        qpos=obs.qpos,
        qvel=obs.qvel,
        state=obs.state,
        sim_time=obs.sim_time,
        wall_time=wall_time,
        reward=obs.reward,
        contact_count=len(obs.contacts),
        contact_summary=obs.contact_summary,
    )
    step.update(obs.extras)  # the scene's declared per-step arrays (schema >= 1.3)
    c = obs.contacts
    return step, {"geom": c.geom, "body": c.body, "pos": c.pos, "frame": c.frame, "force": c.force}


@dataclass
class EpisodeStats:
    """Timing health of one episode."""

    steps: int
    overruns: int
    jitter_p50_ms: float
    jitter_p99_ms: float


def run_episode(
    scene: Scene,
    device: Device,
    writer: EpisodeWriter | BackgroundWriter | None,
    steps: int,
    seed: int,
    rate: float | None = None,
) -> EpisodeStats:
    """Reset with ``seed`` and run ``steps`` control steps; ``rate`` (Hz) paces the loop, None runs flat out."""
    obs = scene.reset(seed)
    device.on_reset(obs, np.random.default_rng(seed + 1_000_003))
    pacer = Pacer(rate) if rate else None
    for _ in range(steps):
        now = pacer.tick() if pacer else time.monotonic()
        action = scene.action_spec.clip(device.get_action(obs))
        if writer is not None:
            writer.add(*step_record(obs, action, now))
        obs = scene.step(action)
        if pacer:
            pacer.wait()
    p50, p99 = jitter_ms(pacer.lateness if pacer else [])
    return EpisodeStats(steps, pacer.overruns if pacer else 0, p50, p99)


def collect(
    scene: Scene,
    device: Device,
    store: EpisodeStore,
    episodes: int,
    steps: int,
    seed: int = 0,
    progress=None,
) -> list[int]:
    """Record ``episodes`` scripted episodes of ``steps`` steps with seeds seed, seed+1, ...; returns their indices."""
    writer = EpisodeWriter(store)
    indices = []
    with device:
        for i in range(episodes):
            episode_seed = seed + i
            writer.begin(seed=episode_seed, scene=scene.name, device=device.name, operator="scripted")
            try:
                stats = run_episode(scene, device, writer, steps, episode_seed)
            except BaseException:
                writer.discard()
                raise
            indices.append(writer.end(overruns=stats.overruns, success=scene.success(), goal=scene.goal().tolist()))
            if progress is not None:
                progress()
    return indices
