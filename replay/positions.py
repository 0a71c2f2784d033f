"""Where the tracked bodies are in a frame: a small detector trained on real frames, and the simulator's truth.

Truth: the recorded state of a step re-simulated in the scene (``set_state``, which runs ``mj_forward``), then the
centre of mass of each of the scene's ``tracked_bodies`` in world coordinates (m). The detector maps a frame to
those positions: a few convolutions draw one heat map per body, a spatial soft-argmax reads the map's centre in
image coordinates (after Levine et al.'s spatial softmax), and a per-body quadratic map, fitted by least squares,
turns it into world x, y, z. The heat maps learn from the body's true image position (the simulator's point seen
through the recorded camera). It is trained on real frames of the run's training episodes only; its error on real
held-out frames is the floor of the position error (docs/replay.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recorder import EpisodeStore
from recorder.windows import episode_starts
from replay.rollout import WindowBatch
from replay.scores import FLOOR_METHOD
from teleop.scenes import load
from train.state_encoder import spatial_soft_argmax

DETECTOR_VERSION = 1  # bump when the detector or its training changes: older cached detectors are retrained
TRAIN_FRAMES = 3000  # real training frames the detector sees at most (evenly subsampled)
TRAIN_STEPS = 400  # at most (about 30 s on one CPU thread) ...
MIN_STEPS = 150  # ... and at least; in between, EPOCHS passes over the training frames
EPOCHS = 10
BATCH = 64
SIGMA_CELLS = 1.0  # spread of the heat maps' target around a body's true image position, in heat-map cells
CACHE_NAME = "position_detector.pt"  # next to the replay outputs
# methods whose frames the detector reads (not the median frame: an empty scene has no body to find)
POSITION_METHODS = ("model", "model_unblended", "copy_last", "shuffled_actions", "reconstruction", "simulator")


def tracked_bodies(store: EpisodeStore) -> tuple[str, ...]:
    """The bodies the store's scene declares worth tracking (empty for a scene that declares none)."""
    scene = load(store.info["scene"])
    try:
        return tuple(scene.tracked_bodies)
    finally:
        scene.close()


def project(scene, camera: str, points: np.ndarray) -> np.ndarray:
    """(..., 3) world points -> (..., 2) image coordinates (column, row) in [-1, 1] (the frame's edges) of
    ``camera`` in the scene's current state (MuJoCo's pinhole: the camera looks along its -z axis)."""
    cam = scene.model.camera(camera)
    pos, rot = scene.data.cam_xpos[cam.id], scene.data.cam_xmat[cam.id].reshape(3, 3)
    local = (points - pos) @ rot  # camera frame: x right, y up, z backwards
    focal = 1.0 / np.tan(np.deg2rad(cam.fovy[0]) / 2)
    height, width = scene.image_size
    depth = -local[..., 2]
    return np.stack([focal * height / width * local[..., 0] / depth, -focal * local[..., 1] / depth], -1)


def true_positions(store: EpisodeStore, steps: np.ndarray, bodies: tuple[str, ...], camera: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """At the given store steps, from their recorded states re-simulated in the scene: (*steps.shape, bodies, 3)
    world centre of mass of each body (m), and (*steps.shape, bodies, 2) where ``camera`` sees it (project). A
    randomized store's scene is first reset with each episode's seed, which redraws its camera and sizes."""
    steps = np.asarray(steps, dtype=np.int64)
    info = store.info
    randomized = "randomization" in info
    scene = load(info["scene"], image_size=tuple(info["image_size"]), cameras=(camera,),
                 **({"randomize": True} if randomized else {}))
    flat = np.unique(steps)
    rows = store.read("data/state", flat)
    episodes = np.searchsorted(store.episode_ends, flat, side="right")
    world, image = np.empty((len(flat), len(bodies), 3)), np.empty((len(flat), len(bodies), 2))
    try:
        for i, state in enumerate(rows):
            if randomized and (i == 0 or episodes[i] != episodes[i - 1]):
                scene.reset(store.episode_info(int(episodes[i])).get("seed"))
            scene.set_state(state)
            world[i] = [scene.data.body(b).xipos for b in bodies]
            image[i] = project(scene, camera, world[i])
    finally:
        scene.close()
    where = np.searchsorted(flat, steps)
    return world[where], image[where]


def quadratic(uv: torch.Tensor) -> torch.Tensor:
    """(..., 2) -> (..., 6) features 1, u, v, u², uv, v² (a planar motion seen in perspective, to second order)."""
    u, v = uv.unbind(-1)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], -1)


class PositionDetector(nn.Module):
    """Frames (N, 3, S, S) in [0, 1] -> one heat map per body -> its soft-argmax (u, v) -> world position (m)
    through a per-body quadratic map fitted by least squares on the training frames."""

    def __init__(self, bodies: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, bodies, 1),
        )
        self.register_buffer("to_world", torch.zeros(bodies, 6, 3))  # per body: quadratic(u, v) @ to_world

    def heatmaps(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, bodies, s, s) logits over the half-resolution grid."""
        return self.features(frames * 2 - 1)

    def keypoints(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, bodies, 2) expected image coordinates (column, row) in [-1, 1] of each body."""
        return spatial_soft_argmax(self.heatmaps(frames))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nbf,bfk->nbk", quadratic(self.keypoints(frames)), self.to_world)


def fit_detector(frames: np.ndarray, world: np.ndarray, image: np.ndarray, seed: int = 0, steps: int | None = None
                 ) -> PositionDetector:
    """Train on real frames (N, S, S, 3) uint8: heat maps toward a Gaussian at each body's true image position
    ``image`` (N, bodies, 2), then the map to its world position ``world`` (N, bodies, 3) by least squares.
    ``steps``: optimiser steps, by default EPOCHS passes over the frames within [MIN_STEPS, TRAIN_STEPS]."""
    if steps is None:
        steps = int(np.clip(EPOCHS * len(frames) / BATCH, MIN_STEPS, TRAIN_STEPS))
    torch.manual_seed(seed)
    detector = PositionDetector(world.shape[1])
    images = torch.from_numpy(frames).permute(0, 3, 1, 2)
    uv = torch.from_numpy(image).float().clamp(-1, 1)
    optimiser = torch.optim.Adam(detector.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), BATCH))
        maps = detector.heatmaps(images[idx].float() / 255)
        s = maps.shape[-1]
        grid = (torch.arange(s) + 0.5) / s * 2 - 1
        d2 = (grid[None, None, None, :] - uv[idx, :, 0, None, None]) ** 2 + \
             (grid[None, None, :, None] - uv[idx, :, 1, None, None]) ** 2  # (B, bodies, s, s)
        target = torch.softmax((-d2 / (2 * (SIGMA_CELLS * 2 / s) ** 2)).flatten(2), -1)
        loss = -(target * torch.log_softmax(maps.flatten(2), -1)).sum(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    detector.eval()
    with torch.no_grad():
        feats = quadratic(torch.cat([detector.keypoints(images[i : i + 512].float() / 255)
                                     for i in range(0, len(images), 512)]))  # (N, bodies, 6)
        target = torch.from_numpy(world).float()
        for b in range(world.shape[1]):
            detector.to_world[b] = torch.linalg.lstsq(feats[:, b], target[:, b]).solution
    return detector


@torch.no_grad()
def detect(detector: PositionDetector, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """(..., 3, S, S) frames in [0, 1] -> (..., bodies, 3) positions, m."""
    bodies = detector.to_world.shape[0]
    flat = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32).reshape(-1, *images.shape[-3:]))
    out = [detector(flat[i : i + batch]) for i in range(0, len(flat), batch)]
    return (torch.cat(out).numpy() if out else np.zeros((0, bodies, 3))).reshape(*images.shape[:-3], bodies, 3)


def training_steps(store: EpisodeStore, episodes: list[int], count: int = TRAIN_FRAMES, seed: int = 0) -> np.ndarray:
    """At most ``count`` store steps of ``episodes``, drawn without replacement with ``seed``, sorted."""
    ends = store.episode_ends
    starts = episode_starts(ends)
    steps = np.concatenate([np.arange(starts[e], ends[e]) for e in episodes])
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(steps, size=min(count, len(steps)), replace=False))


def cache_key(store: EpisodeStore, camera: str, bodies: tuple[str, ...], episodes: list[int], run: dict) -> str:
    """What the trained detector depends on: the data (path, length, scene, camera), the bodies, the training
    episodes and the run, hashed."""
    what = {"version": DETECTOR_VERSION, "data": str(Path(store.path).resolve()), "steps": int(store.num_steps),
            "scene": store.info["scene"], "camera": camera, "bodies": list(bodies),
            "episodes": [int(e) for e in episodes], "run": run, "train_frames": TRAIN_FRAMES,
            "train_steps": [MIN_STEPS, EPOCHS, TRAIN_STEPS]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def load_or_fit(cache: Path, key: str, store: EpisodeStore, frames: np.ndarray, camera: str,
                bodies: tuple[str, ...], episodes: list[int], seed: int = 0) -> PositionDetector:
    """The detector cached at ``cache`` when its key matches, else one trained on ``episodes``' frames of
    ``frames`` (N, S, S, 3) uint8 (the store's ``camera`` frames) and saved there."""
    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            detector = PositionDetector(len(bodies))
            detector.load_state_dict(saved["state"])
            return detector.eval()
    steps = training_steps(store, episodes, seed=seed)
    detector = fit_detector(np.asarray(frames[steps]), *true_positions(store, steps, bodies, camera), seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "bodies": list(bodies), "state": detector.state_dict()}, cache)
    return detector


@dataclass
class Tracker:
    """Adds true and detected positions of the tracked bodies to replay's window batches."""

    store: EpisodeStore
    camera: str
    bodies: tuple[str, ...]
    detector: PositionDetector

    def annotate(self, b: WindowBatch) -> None:
        """truth["position"] (B, T, bodies, 3) from the simulator; "position" (B, H, bodies, 3) detected on the
        frames of every method of POSITION_METHODS, and on the real imagined frames as FLOOR_METHOD."""
        steps = b.starts[:, None] + np.arange(b.truth["image"].shape[1])[None]
        b.truth["position"] = true_positions(self.store, steps, self.bodies, self.camera)[0]
        for method, pred in b.preds.items():
            if method in POSITION_METHODS and "image" in pred:
                pred["position"] = detect(self.detector, pred["image"])
        b.preds[FLOOR_METHOD] = {"position": detect(self.detector, b.truth["image"][:, b.context :])}


def tracker(store: EpisodeStore, frames: np.ndarray, camera: str, episodes: list[int], run: dict, cache: Path
            ) -> Tracker | None:
    """A Tracker whose detector is trained on ``episodes`` (the run's training split) or reused from ``cache``
    when data, bodies, episodes and ``run`` (what names the run) match; None for a scene tracking no body."""
    bodies = tracked_bodies(store)
    if not bodies:
        return None
    key = cache_key(store, camera, bodies, episodes, run)
    return Tracker(store, camera, bodies, load_or_fit(cache, key, store, frames, camera, bodies, episodes))

