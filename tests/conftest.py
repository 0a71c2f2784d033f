"""Shared fixtures: headless rendering, a small real store recorded from the push scene."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import pytest  # noqa: E402

from recorder import EpisodeStore  # noqa: E402
from teleop.devices.scripted import scripted_operator  # noqa: E402
from teleop.loop import collect  # noqa: E402
from teleop.scenes import load  # noqa: E402

EPISODES, STEPS = 6, 30


def record(path, episodes: int = EPISODES, steps: int = STEPS, seed: int = 0, image_size: int = 64) -> str:
    """Record scripted push episodes into a new store at ``path``."""
    scene = load("push", image_size=(image_size, image_size))
    with EpisodeStore.create(path, scene.info()) as store:
        collect(scene, scripted_operator(scene), store, episodes, steps, seed)
    scene.close()
    return str(path)


@pytest.fixture(scope="session")
def push_store(tmp_path_factory) -> str:
    """A read-only store of 6 scripted push episodes of 30 steps (do not write to it)."""
    return record(tmp_path_factory.mktemp("data") / "push.zarr")


@pytest.fixture
def window():
    """A real 128-px teleop window (SDL's dummy driver unless a test sets a display), its event queue empty."""
    import pygame

    from teleop.window import Window

    win = Window("test", view_size=128)
    win.open()
    pygame.event.clear()
    yield win
    win.close()
