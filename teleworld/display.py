"""How a pygame window and MuJoCo's offscreen renderer share one desktop's GL stack.

The pairing, chosen once before any window opens:

- the window is an SDL surface blitted in software (``SDL_FRAMEBUFFER_ACCELERATION=0``): teleworld only shows
  images it already has, so SDL needs no GL context of its own;
- MuJoCo renders offscreen through ``MUJOCO_GL`` (``egl`` by default: NVIDIA, Mesa and software Mesa alike).

Two GL users in one process is what breaks on X11: with SDL's accelerated framebuffer, MuJoCo's EGL context fails
in ``eglMakeCurrent`` (``EGL_BAD_ACCESS``). Either variable may be set by the user to override the choice
(e.g. ``MUJOCO_GL=glfw`` or ``osmesa``); docs/teleop.md lists the overrides.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from teleworld.errors import TeleworldError

SOFTWARE_FRAMEBUFFER = "SDL_FRAMEBUFFER_ACCELERATION"
WMCLASS = "SDL_VIDEO_X11_WMCLASS"
HEADLESS_DRIVERS = ("dummy", "offscreen")  # no desktop: nothing to tell the user


def open_window(size: tuple[int, int], title: str) -> Any:
    """Open the one pygame window with the GL pairing above; print which pairing is in use on stderr.

    Returns the window's surface. Raises TeleworldError with one line when no display can be opened.
    """
    os.environ.setdefault(SOFTWARE_FRAMEBUFFER, "0")
    if os.environ.get(WMCLASS, os.path.basename(sys.argv[0])) == os.path.basename(sys.argv[0]):
        os.environ[WMCLASS] = "teleworld"  # the desktop's name for the app, not pygame's default (argv[0])
    import pygame

    try:
        pygame.display.init()
        pygame.font.init()
        pygame.display.set_caption(title)
        screen = pygame.display.set_mode(size)
    except pygame.error as exc:
        raise TeleworldError(f"cannot open a window ({exc}); is DISPLAY set? SDL_VIDEODRIVER=dummy runs "
                             "without one") from None
    if pygame.display.get_driver() not in HEADLESS_DRIVERS:
        print(f"display: {pairing()}", file=sys.stderr)
    return screen


def pairing() -> str:
    """One line naming the window system, how the window is drawn and MuJoCo's GL backend."""
    import pygame

    driver = pygame.display.get_driver() if pygame.display.get_init() else "none"
    drawn = "software framebuffer" if os.environ.get(SOFTWARE_FRAMEBUFFER) == "0" else "accelerated framebuffer"
    return f"SDL {driver} window ({drawn}), MuJoCo renders offscreen with {os.environ.get('MUJOCO_GL', 'glfw')}"
