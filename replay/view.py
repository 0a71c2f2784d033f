"""`teleworld view`: browse real vs imagined rollouts of any episode in a pygame window.

Keys: up/down episode, ,/. move the window start, left/right scrub, space play/pause, [ ] context K,
- = horizon H, b cycle model / baselines, q or escape quit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygame
import torch

from replay.metrics import psnr, ssim
from replay.rollout import predict, shuffle_actions
from replay.screen import BACKGROUND, draw_lines, draw_panels, init_display, panels_size
from teleworld.errors import TeleworldError
from train.dataset import EpisodeArrays
from train.model import WorldModel

SHOWN = ("model", "shuffled_actions", "copy_last", "reconstruction")
HELP = "up/down episode  ,/. start  left/right scrub  space play  [ ] K  - = H  b baseline  q quit"


@dataclass
class ViewState:
    """What the viewer shows: a window (episode, start offset, K, H), a frame in it, and a method."""

    episode: int = 0
    start: int = 0
    context: int = 5
    horizon: int = 50
    t: int = 0
    playing: bool = False
    method: str = "model"
    running: bool = True


class Viewer:
    """Holds the model, the data and the state; recomputes a rollout only when the window changes."""

    def __init__(self, model: WorldModel, data: EpisodeArrays, context: int, horizon: int, scale: int = 4,
                 device: torch.device | str = "cpu"):
        self.model, self.data, self.scale, self.device = model, data, scale, device
        self.state = ViewState(context=max(1, context), horizon=max(1, horizon))
        ends, starts = np.asarray(data.episode_ends), data.episode_begins
        self.episodes = [int(e) for e in data.active if ends[e] - starts[e] >= 2]  # deleted ones never shown
        self.bounds = [(int(starts[e]), int(ends[e])) for e in self.episodes]
        if not self.bounds:
            raise TeleworldError("every active episode has fewer than 2 steps: nothing to imagine")
        self._key: tuple | None = None
        self._frames: dict[str, np.ndarray] = {}
        self.clamp()

    def episode_range(self) -> tuple[int, int]:
        """[first, end) steps of the current episode in the store."""
        return self.bounds[self.state.episode]

    def clamp(self) -> None:
        """Keep K, H, the start and t inside the current episode (K + H never exceeds its length)."""
        s = self.state
        s.episode %= len(self.bounds)
        first, end = self.episode_range()
        length = end - first
        s.context = int(np.clip(s.context, 1, max(1, length - 1)))
        s.horizon = int(np.clip(s.horizon, 1, max(1, length - s.context)))
        s.start = int(np.clip(s.start, 0, max(0, length - s.context - s.horizon)))
        s.t = int(np.clip(s.t, 0, s.context + s.horizon - 1))

    def handle(self, event: pygame.event.Event) -> None:
        """Apply one key press."""
        if event.type == pygame.QUIT:
            self.state.running = False
        if event.type != pygame.KEYDOWN:
            return
        s, k = self.state, event.key
        moves = {pygame.K_UP: ("episode", 1), pygame.K_DOWN: ("episode", -1), pygame.K_PERIOD: ("start", 1),
                 pygame.K_COMMA: ("start", -1), pygame.K_RIGHT: ("t", 1), pygame.K_LEFT: ("t", -1),
                 pygame.K_RIGHTBRACKET: ("context", 1), pygame.K_LEFTBRACKET: ("context", -1),
                 pygame.K_EQUALS: ("horizon", 5), pygame.K_MINUS: ("horizon", -5)}
        if k in moves:
            name, delta = moves[k]
            setattr(s, name, getattr(s, name) + delta)
            s.playing = s.playing and name != "t"
        elif k == pygame.K_SPACE:
            s.playing = not s.playing
        elif k == pygame.K_b:
            s.method = SHOWN[(SHOWN.index(s.method) + 1) % len(SHOWN)]
        elif k in (pygame.K_q, pygame.K_ESCAPE):
            s.running = False
        self.clamp()

    def frames(self) -> dict[str, np.ndarray]:
        """Truth and every method's frames (K+H, 3, S, S) for the current window; cached."""
        s = self.state
        key = (s.episode, s.start, s.context, s.horizon)
        if key != self._key:
            start = np.array([self.episode_range()[0] + s.start])
            length = s.context + s.horizon
            batch = self.data.batch(start, length, self.device)
            shuffled = torch.from_numpy(shuffle_actions(batch["action"].cpu().numpy(), s.context, 0))
            truth, preds, recon = predict(self.model, batch, shuffled.to(self.device), s.context)
            real = truth["image"][0]
            frames = {"truth": real}
            for method in SHOWN:
                head = real[: s.context] if method == "copy_last" else recon[0]
                frames[method] = np.concatenate([head, preds[method]["image"][0]])
            self._key, self._frames = key, frames
        return self._frames

    def lines(self) -> list[str]:
        """Current frame's metrics and the window's means."""
        s, f = self.state, self.frames()
        phase = f"context {s.t + 1}/{s.context}" if s.t < s.context else f"imagined {s.t - s.context + 1}/{s.horizon}"
        truth, pred = f["truth"], f[s.method]
        now = f"PSNR {psnr(pred[s.t], truth[s.t]):.2f} dB  SSIM {ssim(pred[s.t], truth[s.t]):.3f}"
        means = "  ".join(f"{m} {psnr(f[m][s.context:], truth[s.context:]).mean():.2f}" for m in SHOWN)
        first, end = self.episode_range()
        return [f"episode {self.episodes[s.episode]} ({s.episode + 1} of {len(self.bounds)}, {end - first} steps)  "
                f"start {s.start}  K {s.context}  H {s.horizon}  {'playing' if s.playing else 'paused'}",
                f"{phase}  showing {s.method}:  {now}",
                f"mean imagined PSNR (dB): {means}", HELP]

    def draw(self, screen: pygame.Surface) -> None:
        s, f = self.state, self.frames()
        screen.fill(BACKGROUND)
        y = draw_panels(screen, f["truth"][s.t], f[s.method][s.t], self.scale, ("real", s.method),
                        imagined=s.t >= s.context)
        draw_lines(screen, self.lines(), y)

    def tick(self, events: list[pygame.event.Event]) -> bool:
        """Handle events, advance playback, return whether to keep running."""
        for event in events:
            self.handle(event)
        s = self.state
        if s.playing:
            s.t = (s.t + 1) % (s.context + s.horizon)
        return s.running


def view_loop(viewer: Viewer, screen: pygame.Surface, fps: float = 10.0, max_frames: int | None = None) -> int:
    """Run the viewer until quit (or ``max_frames``); returns the frames drawn."""
    clock, frames = pygame.time.Clock(), 0
    while viewer.tick(pygame.event.get()) and (max_frames is None or frames < max_frames):
        viewer.draw(screen)
        pygame.display.flip()
        frames += 1
        clock.tick(fps)
    return frames


def run_view(model_path: str | Path, data_path: str | Path, context: int = 5, horizon: int = 50, scale: int = 4,
             device: torch.device | str = "cpu") -> None:
    """Load, open the window, loop, close."""
    from replay.evaluate import load_for_replay

    model, data, _, _ = load_for_replay(model_path, data_path, device)
    viewer = Viewer(model, data, context, horizon, scale, device)
    try:
        screen = init_display(panels_size(data.spec.image_size, scale, 4), "teleworld view")
        view_loop(viewer, screen)
    finally:
        pygame.quit()
