"""The operator's pygame window: the live camera view scaled up (nearest neighbour, crisp) and a HUD panel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from teleworld.display import open_window

PANEL_WIDTH = 300  # px
LINE_HEIGHT = 20  # px
WHITE, GREY, RED, GREEN, YELLOW = (235, 235, 235), (150, 150, 150), (235, 60, 60), (80, 220, 100), (250, 210, 60)


@dataclass
class Hud:
    """What the HUD shows this frame."""

    lines: list[str]  # plain status lines (scene, device, episode, rate...)
    recording: bool = False
    contact: bool = False
    alerts: list[str] = field(default_factory=list)  # shown in red (unplugged pad, quit prompt...)
    overlay: list[str] = field(default_factory=list)  # key help, drawn over the view when non-empty


class Window:
    """One pygame window. ``poll`` returns this frame's events; ``is_close`` spots the window's close button."""

    def __init__(self, title: str, view_size: int = 512):
        self.title, self.view_size = title, view_size
        self._screen: Any = None

    def open(self) -> None:
        import pygame

        self._screen = open_window((self.view_size + PANEL_WIDTH, self.view_size), self.title)
        self._pygame = pygame
        self._font = pygame.font.Font(None, 22)
        self._glyphs: dict[tuple[str, tuple[int, int, int]], Any] = {}

    def poll(self) -> list[Any]:
        return self._pygame.event.get()

    def is_close(self, event: Any) -> bool:
        return event.type == self._pygame.QUIT

    def draw(self, frame: np.ndarray, hud: Hud) -> None:
        """Show a (H, W, 3) uint8 frame scaled to fit the view, and the HUD beside it."""
        pygame, screen = self._pygame, self._screen
        screen.fill((20, 20, 24))
        h, w = frame.shape[:2]
        scale = self.view_size / max(h, w)
        image = pygame.image.frombuffer(np.ascontiguousarray(frame).tobytes(), (w, h), "RGB")
        screen.blit(pygame.transform.scale(image, (round(w * scale), round(h * scale))), (0, 0))
        x, y = self.view_size + 12, 10
        self._light(x, y, "REC", RED if hud.recording else None)
        self._light(x + 90, y, "contact", YELLOW if hud.contact else None)
        y += LINE_HEIGHT + 4
        for line in hud.lines:
            y = self._text(line, x, y, WHITE)
        for line in hud.alerts:
            y = self._text(line, x, y, RED)
        if hud.overlay:
            shade = pygame.Surface((self.view_size, self.view_size), pygame.SRCALPHA)
            shade.fill((0, 0, 0, 190))
            screen.blit(shade, (0, 0))
            y = 10
            for line in hud.overlay:
                y = self._text(line, 12, y, GREEN)
        pygame.display.flip()

    def close(self) -> None:
        if self._screen is not None:
            self._pygame.display.quit()
            self._screen = None

    def _light(self, x: int, y: int, label: str, color: tuple[int, int, int] | None) -> None:
        """A filled (on) or hollow grey (off) dot with its label."""
        self._pygame.draw.circle(self._screen, color or GREY, (x + 6, y + 8), 6, 0 if color else 1)
        self._text(label, x + 18, y, color or GREY)

    def _text(self, text: str, x: int, y: int, color: tuple[int, int, int]) -> int:
        key = (text, color)
        if key not in self._glyphs:  # most HUD lines repeat from frame to frame: render each once
            if len(self._glyphs) > 512:
                self._glyphs.clear()
            self._glyphs[key] = self._font.render(text, True, color)
        self._screen.blit(self._glyphs[key], (x, y))
        return y + LINE_HEIGHT
