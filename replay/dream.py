"""`teleworld dream`: one operator drives the real simulator and the world model at once, shown side by side.

Each control step the operator's action is applied to the scene and to the model's latent state (one
``img_step`` + decode, timed). The model runs open loop from its last resync; R resyncs it to the real state by
observing the last K real frames (as in replay's protocol), N starts a new episode, Q or escape quits.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np
import pygame
import torch

from replay.keys import OperatorInput
from replay.metrics import psnr
from replay.screen import BACKGROUND, draw_lines, draw_panels, init_display, panels_size
from teleop.scenes import load
from teleop.scenes.base import Scene
from teleworld.errors import TeleworldError
from train.dataset import DataSpec
from train.model import WorldModel

RESYNC_CONTEXT = 5  # real frames observed on a resync


class Dream:
    """The scene and the model stepped together; ``state`` is the model's latent for the current step."""

    def __init__(self, model: WorldModel, spec: DataSpec, scene: Scene, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.model, self.spec, self.scene, self.device = model, spec, scene, torch.device(device)
        low, high = (np.asarray(b, np.float32) for b in (scene.action_spec.low, scene.action_spec.high))
        self.low, self.high = low, high
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """New episode from ``seed``; the model observes its first frame."""
        self.seed = seed
        self.obs = self.scene.reset(seed)
        self.history: deque = deque(maxlen=RESYNC_CONTEXT)  # (frame (3, S, S), action applied after it)
        self.latency_ms: deque = deque(maxlen=50)
        self.steps = 0
        self.resync()

    def real_frame(self) -> np.ndarray:
        """The current real camera frame as (3, S, S) in [0, 1]."""
        return np.moveaxis(self.obs.frames[self.spec.camera], -1, 0).astype(np.float32) / 255.0

    @torch.no_grad()
    def resync(self) -> None:
        """Put the model on the real state: observe the last K real frames with the actions between them."""
        frames = [f for f, _ in self.history] + [self.real_frame()]
        actions = [a for _, a in self.history] + [np.zeros_like(self.low)]  # the last one is not used
        images = torch.from_numpy(np.stack(frames)[None]).to(self.device)
        acts = torch.from_numpy(np.stack(actions)[None]).to(self.device)
        posts, _ = self.model.observe(images[:, -RESYNC_CONTEXT:], acts[:, -RESYNC_CONTEXT:])
        self.state = {k: v[:, -1] for k, v in posts.items()}
        self.pred = self._decode()
        self.since_resync = 0

    def _decode(self) -> np.ndarray:
        feat = self.model.rssm.feat(self.state)[:, None]
        return self.model.decode(feat)["image"][0, 0].clamp(0, 1).float().cpu().numpy()

    def to_action(self, command: np.ndarray) -> np.ndarray:
        """Operator command in [-1, 1] -> the scene's action range."""
        return np.where(command >= 0, command * self.high, -command * self.low).astype(np.float32)

    @torch.no_grad()
    def step(self, command: np.ndarray) -> None:
        """Apply one action to the simulator and to the model."""
        action = self.scene.action_spec.clip(self.to_action(command))
        self.history.append((self.real_frame(), action))
        self.obs = self.scene.step(action)
        began = time.perf_counter()
        act = torch.from_numpy(action[None]).to(self.device)
        self.state = self.model.imagine(self.state, act[:, None])
        self.state = {k: v[:, -1] for k, v in self.state.items()}
        self.pred = self._decode()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.latency_ms.append((time.perf_counter() - began) * 1e3)
        self.steps += 1
        self.since_resync += 1

    def divergence_db(self) -> float:
        """PSNR of the imagined frame against the real one (lower = further apart)."""
        return float(psnr(self.pred, self.real_frame()))

    def lines(self, command: np.ndarray) -> list[str]:
        """Status text: divergence, model latency against the control period, the action."""
        budget = 1e3 / self.scene.control_rate
        recent = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        fits = "fits" if recent.max() < budget else "DOES NOT FIT"
        return [f"step {self.steps}  open loop for {self.since_resync} steps since resync  "
                f"PSNR imagined vs real {self.divergence_db():.2f} dB",
                f"model step {np.median(recent):.1f} ms median, {recent.max():.1f} worst of last {len(recent)} "
                f"({fits} the {budget:.0f} ms period)  "
                f"action {np.array2string(self.to_action(command), precision=2)}",
                "arrows/WASD or stick: drive   R resync   N new episode   Q quit"]


def dream_loop(dream: Dream, screen: pygame.Surface, scale: int, paced: bool = True,
               max_steps: int | None = None) -> int:
    """Run at the scene's control rate until quit (or ``max_steps``); returns the steps taken."""
    operator = OperatorInput(dream.scene.action_spec.size)
    clock = pygame.time.Clock()
    running, steps = True, 0
    while running and (max_steps is None or steps < max_steps):
        for event in pygame.event.get():
            operator.handle(event)
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key in (pygame.K_q, pygame.K_ESCAPE)):
                running = False
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                dream.resync()
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_n:
                dream.reset(dream.seed + 1)
        if not running:
            break
        command = operator.action()
        dream.step(command)
        steps += 1
        screen.fill(BACKGROUND)
        y = draw_panels(screen, dream.real_frame(), dream.pred, scale, ("real simulator", "world model"),
                        imagined=dream.since_resync > 0)
        draw_lines(screen, dream.lines(command), y)
        pygame.display.flip()
        if paced:
            clock.tick(dream.scene.control_rate)
    return steps


def open_dream(model_path: str | Path, scene_name: str | None = None, seed: int = 0,
               device: torch.device | str = "cpu") -> Dream:
    """Load the model and its scene (``scene_name`` defaults to the model's); refuse a scene it does not know."""
    from train.checkpoint import load_model

    model, spec, _ = load_model(model_path, device)
    scene_name = scene_name or spec.scene
    if spec.scene != scene_name:
        raise TeleworldError(f"model was trained on scene {spec.scene!r}, not {scene_name!r}")
    try:
        scene = load(scene_name, image_size=(spec.image_size, spec.image_size), cameras=(spec.camera,))
    except ValueError as exc:  # a camera the scene does not have
        raise TeleworldError(f"model does not fit scene {scene_name!r}: {exc}") from None
    if list(scene.action_spec.names) != list(spec.action_names):
        scene.close()
        raise TeleworldError(f"model was trained on actions {spec.action_names} but scene {scene_name!r} has "
                             f"{list(scene.action_spec.names)}")
    return Dream(model, spec, scene, seed, device)


def run_dream(model_path: str | Path, scene_name: str | None = None, seed: int = 0, scale: int = 4,
              device: torch.device | str = "cpu") -> None:
    """Load, open the window and any gamepads, loop, close."""
    dream = open_dream(model_path, scene_name, seed, device)
    try:
        screen = init_display(panels_size(dream.spec.image_size, scale, 3), "teleworld dream")
        pygame.joystick.init()
        pads = [pygame.joystick.Joystick(i) for i in range(pygame.joystick.get_count())]  # open: they send events
        dream_loop(dream, screen, scale)
        for pad in pads:
            pad.quit()
    finally:
        dream.scene.close()
        pygame.quit()
