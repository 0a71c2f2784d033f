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


LIGHT_ON = (255, 200, 40)  # a contact group touches
LIGHT_OFF = (70, 70, 70)
LIGHT_MISMATCH = (230, 40, 40)  # ring around a predicted light that disagrees with the real one
LIGHT_RADIUS = 5


def light_centre(panel: int, index: int, side: int, scale: int) -> tuple[int, int]:
    """Pixel centre of contact light ``index`` in the top-left corner of image panel ``panel`` (as draw_panels)."""
    x0, y0 = PAD + panel * (side * scale + PAD), PAD + LINE
    return x0 + LIGHT_RADIUS + 4, y0 + LIGHT_RADIUS + 4 + index * (2 * LIGHT_RADIUS + 6)


def draw_contact_lights(screen: pygame.Surface, names: list[str], flags, panel: int, side: int, scale: int,
                        reference=None) -> None:
    """One light per contact group over image panel ``panel`` (0 real, 1 predicted), lit where ``flags`` say the
    group touches, with the group's name; ringed red where ``reference`` (the real contacts) disagrees."""
    font = pygame.font.Font(None, 16)
    for i, (name, on) in enumerate(zip(names, flags)):
        cx, cy = light_centre(panel, i, side, scale)
        label = font.render(name, True, TEXT)
        r = LIGHT_RADIUS
        pygame.draw.rect(screen, BACKGROUND, (cx - r - 3, cy - r - 3, 2 * r + 10 + label.get_width(), 2 * r + 6))
        pygame.draw.circle(screen, LIGHT_ON if on else LIGHT_OFF, (cx, cy), r)
        if reference is not None and bool(reference[i]) != bool(on):
            pygame.draw.circle(screen, LIGHT_MISMATCH, (cx, cy), r + 2, 2)
        screen.blit(label, (cx + r + 4, cy - label.get_height() // 2))
