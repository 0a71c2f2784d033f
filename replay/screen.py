"""pygame drawing shared by the viewer and dream teleop: image panels, labels and text lines."""

from __future__ import annotations

import numpy as np
import pygame

from replay.report import CONTEXT_COLOUR, IMAGINED_COLOUR, error_map, to_uint8
from teleworld.display import open_window

BACKGROUND = (24, 24, 24)
TEXT = (230, 230, 230)
PAD = 8
LINE = 20
CONTEXT = tuple(int(c) for c in CONTEXT_COLOUR)
IMAGINED = tuple(int(c) for c in IMAGINED_COLOUR)


def init_display(size: tuple[int, int], title: str) -> pygame.Surface:
    """Open the window (teleworld.display chooses the GL pairing; headless under SDL_VIDEODRIVER=dummy)."""
    return open_window(size, title)


def panels_size(side: int, scale: int, text_lines: int) -> tuple[int, int]:
    """Window size for three image panels in a row and ``text_lines`` lines of text below."""
    tile = side * scale
    return 3 * tile + 4 * PAD, tile + 3 * PAD + LINE + text_lines * LINE


def draw_panels(screen: pygame.Surface, truth: np.ndarray, pred: np.ndarray, scale: int, labels: tuple[str, str],
                imagined: bool) -> int:
    """Draw real | predicted | error for frames (3, S, S) in [0, 1]; returns the y below the panels."""
    font = pygame.font.Font(None, LINE + 2)
    tiles = (to_uint8(truth), to_uint8(pred), error_map(pred, truth))
    tile = truth.shape[-1] * scale
    for i, (image, label) in enumerate(zip(tiles, (*labels, "error |prediction - real| x3"))):
        x = PAD + i * (tile + PAD)
        screen.blit(font.render(label, True, TEXT), (x, PAD))
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(image.swapaxes(0, 1)))
        screen.blit(pygame.transform.scale(surface, (tile, tile)), (x, PAD + LINE))
        if i == 1:
            pygame.draw.rect(screen, IMAGINED if imagined else CONTEXT, (x - 2, PAD + LINE - 2, tile + 4, tile + 4), 3)
    return PAD * 2 + LINE + tile


def draw_lines(screen: pygame.Surface, lines: list[str], y: int, colour: tuple[int, int, int] = TEXT) -> None:
    """Text lines from ``y`` down."""
    font = pygame.font.Font(None, LINE + 2)
    for i, line in enumerate(lines):
        screen.blit(font.render(line, True, colour), (PAD, y + i * LINE))
