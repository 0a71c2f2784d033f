import numpy as np

from recorder.windows import make_windows, split_episodes


def test_windows_never_cross_episodes():
    ends = np.array([5, 12, 14, 20])
    starts = make_windows(ends, 3)
    episode_of = np.searchsorted(ends, starts, side="right")
    episode_of_last = np.searchsorted(ends, starts + 2, side="right")
    assert np.array_equal(episode_of, episode_of_last)
    assert starts.tolist() == [0, 1, 2, 5, 6, 7, 8, 9, 14, 15, 16, 17]  # episode 2 (2 steps) is too short


def test_windows_restricted_to_episodes():
    assert make_windows(np.array([4, 8]), 4, episodes=np.array([1])).tolist() == [4]
    assert make_windows(np.array([4, 8]), 9).size == 0


def test_split_is_seeded_and_disjoint():
    train_a, val_a = split_episodes(20, 0.2, seed=1)
    train_b, val_b = split_episodes(20, 0.2, seed=1)
    _, val_c = split_episodes(20, 0.2, seed=2)
    assert np.array_equal(val_a, val_b) and len(val_a) == 4
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == 20
    assert not np.array_equal(val_a, val_c)
    assert split_episodes(1, 0.5, 0)[1].size == 0
