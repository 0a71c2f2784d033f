"""Index maths for training windows, kept apart from data access (pure functions, tested alone).

The trainer (train.dataset), replay and recorder.loader all import them from here, so windows are cut one way.
"""

from __future__ import annotations

import numpy as np


def episode_starts(episode_ends: np.ndarray) -> np.ndarray:
    """First step of each episode."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    return np.concatenate([[0], ends[:-1]]).astype(np.int64)


def make_windows(episode_ends: np.ndarray, length: int, episodes: np.ndarray | None = None) -> np.ndarray:
    """Start indices of every window of ``length`` steps that lies inside one episode.

    ``episodes`` restricts to those episode indices. Windows never cross an episode boundary;
    episodes shorter than ``length`` contribute none.
    """
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = episode_starts(ends)
    chosen = np.arange(len(ends)) if episodes is None else np.asarray(episodes, dtype=np.int64)
    out = [np.arange(starts[e], ends[e] - length + 1) for e in chosen if ends[e] - starts[e] >= length]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) episode indices: a seeded split by whole episode, at least one of each when possible."""
    if num_episodes < 2 or val_fraction <= 0:
        return np.arange(num_episodes), np.zeros(0, dtype=np.int64)
    n_val = int(np.clip(round(num_episodes * val_fraction), 1, num_episodes - 1))
    order = np.random.default_rng(seed).permutation(num_episodes)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
