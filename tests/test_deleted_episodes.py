"""Episodes marked deleted stay out of training, replay, the viewer, the loader and the exports.

The deleted episodes of the fixture hold NaN qpos, as damaged data one deletes would: a window, frame or row taken
from them shows up as a NaN loss, a NaN in an export, or a deleted index in a list."""

import shutil

import numpy as np
import pandas as pd
import pygame
import pytest
import zarr

from recorder import EpisodeStore
from recorder.edit import mark_deleted
from recorder.export import export_diffusion_policy, export_lerobot
from recorder.loader import WindowLoader
from replay.evaluate import evaluate, held_out_episodes, training_episodes
from replay.screen import init_display, panels_size
from replay.view import Viewer, view_loop
from teleworld.errors import TeleworldError
from train.checkpoint import load_model, read_checkpoint
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train

DELETED, ACTIVE = [1, 4], [0, 2, 3, 5]  # of the 6 push episodes of 30 steps in conftest's push_store


def delete_and_poison(path, episodes: list[int]) -> None:
    """Mark ``episodes`` deleted and overwrite their qpos with NaN."""
    with EpisodeStore.open(path, mode="a") as store:
        mark_deleted(store, episodes)
        for e in episodes:
            sl = store.episode_slice(e)
            store.arr("data/qpos")[sl] = np.full((sl.stop - sl.start, store.info["nq"]), np.nan)


def arrays(path) -> EpisodeArrays:
    store = EpisodeStore.open(path)
    return EpisodeArrays(store, DataSpec.from_store(store))


def episodes_of(path, steps: np.ndarray) -> set[int]:
    return set(np.searchsorted(EpisodeStore.open(path).episode_ends, steps, side="right").tolist())


@pytest.fixture(scope="module")
def marked(tmp_path_factory, push_store) -> str:
    path = tmp_path_factory.mktemp("marked") / "marked.zarr"
    shutil.copytree(push_store, path)
    delete_and_poison(path, DELETED)
    return str(path)


@pytest.fixture(scope="module")
def run(marked, tmp_path_factory) -> str:
    """A tiny model trained on the marked store (a window from a deleted episode would stop it: NaN loss)."""
    out = tmp_path_factory.mktemp("run")
    train(arrays(marked), make_config("tiny", steps=4), out, show_progress=False)
    return str(out)


def test_dataset_windows_come_from_active_episodes_only(marked):
    data = arrays(marked)
    assert data.active.tolist() == ACTIVE
    assert episodes_of(marked, data.windows(8)) == set(ACTIVE)
    assert episodes_of(marked, data.windows(8, np.array([1, 2, 4]))) == {2}  # named, still skipped


def test_training_and_its_resume_skip_deleted_episodes(tmp_path, marked, run):
    ckpt = read_checkpoint(f"{run}/checkpoint.pt")
    assert sorted(ckpt["train_episodes"] + ckpt["val_episodes"]) == ACTIVE
    # episodes deleted after a run began: its resume must not draw from them though its checkpoint names them
    store, out = tmp_path / "s.zarr", tmp_path / "run"
    shutil.copytree(marked, store)
    shutil.copytree(run, out)
    later = ckpt["train_episodes"][:2]
    delete_and_poison(store, later)
    result = train(arrays(store), make_config("tiny", steps=12), out, show_progress=False, resume=True)
    assert result["steps"] == 12 and all(np.isfinite(row["total"]) for row in result["history"])


def test_replay_episode_lists_skip_deleted_episodes(tmp_path, marked, run):
    data = arrays(marked)
    assert held_out_episodes({"val_episodes": [1, 2]}, data) == [2]
    assert held_out_episodes({"val_episodes": [4]}, data) == ACTIVE  # the fallback: every active episode
    assert training_episodes({"train_episodes": [0, 1, 4]}, data, [2]) == [0]
    assert training_episodes({"train_episodes": [1]}, data, [2]) == [0, 3, 5]
    metrics = evaluate(run, marked, tmp_path / "all", context=3, horizon=8, windows=40, episodes="all",
                       video_windows=1, show_progress=False)  # `teleworld replay --all-episodes`
    assert metrics["episodes"] == ACTIVE
    assert episodes_of(marked, np.array(metrics["window_starts"])) == set(ACTIVE)
    assert all(np.isfinite(v) for v in metrics["mean"]["psnr"].values())
    with pytest.raises(TeleworldError, match="episode 4 is not an active episode"):
        evaluate(run, marked, tmp_path / "one", context=3, horizon=8, episodes=[2, 4], show_progress=False)


def test_viewer_lists_only_active_episodes(marked, run):
    model, spec, _ = load_model(run)
    viewer = Viewer(model, EpisodeArrays(EpisodeStore.open(marked), spec), context=3, horizon=8, scale=1)
    assert viewer.episodes == ACTIVE
    screen = init_display(panels_size(64, 1, 4), "test view")
    try:
        seen = []
        for _ in range(len(ACTIVE) + 1):
            view_loop(viewer, screen, fps=1000, max_frames=1)
            seen.append(viewer.episodes[viewer.state.episode])
            assert viewer.lines()[0].startswith(f"episode {seen[-1]} (")
            assert np.isfinite(viewer.frames()["model"]).all()
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_UP))
        assert seen == ACTIVE + ACTIVE[:1]  # up steps over the deleted ones and wraps around
    finally:
        pygame.quit()


def test_loader_skips_deleted_episodes_even_when_named(marked):
    assert episodes_of(marked, WindowLoader(marked, 5, 4).windows) == set(ACTIVE)
    assert episodes_of(marked, WindowLoader(marked, 5, 4, episodes=[1, 2]).windows) == {2}


def test_exports_hold_no_deleted_episode(tmp_path, marked):
    store = EpisodeStore.open(marked)
    qpos = np.concatenate([store.episode(e, ["qpos"])["qpos"] for e in ACTIVE])
    dp = tmp_path / "dp.zarr"
    export_diffusion_policy(store, dp)
    root = zarr.open_group(dp, mode="r", zarr_format=2)
    assert root["meta/episode_ends"][:].tolist() == [30, 60, 90, 120]
    assert np.array_equal(root["data/qpos"][:], qpos)
    lerobot = tmp_path / "lerobot"
    assert export_lerobot(store, lerobot)["episodes"] == len(ACTIVE)
    frames = pd.read_parquet(lerobot / "data" / "chunk-000" / "file-000.parquet")
    state = np.stack(frames["observation.state"].to_numpy())
    assert len(state) == 120 and np.isfinite(state).all()
    assert np.array_equal(state[:, : store.info["nq"]], qpos.astype(np.float32))
