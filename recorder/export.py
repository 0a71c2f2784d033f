"""Exports for peers' loaders: diffusion_policy's ReplayBuffer (zarr format 2) and LeRobot v3.0 (parquet + MP4).

Only active (not deleted) episodes are exported, renumbered 0..N-1 in store order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numcodecs
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from recorder.schema import ArraySpec, image_key, proprio
from recorder.store import EpisodeStore, chunk_steps
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar

LEROBOT_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def _new_output(out: Path) -> None:
    if out.exists():
        raise TeleworldError(f"{out} already exists; exports write a new directory")


def _source_steps(store: EpisodeStore, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(store step of every exported step, exported episode lengths)."""
    slices = [store.episode_slice(int(e)) for e in episodes]
    if not slices:
        raise TeleworldError(f"{store.path} has no active episodes to export")
    return np.concatenate([np.arange(s.start, s.stop) for s in slices]), np.array([s.stop - s.start for s in slices])


def export_diffusion_policy(store: EpisodeStore, out: Path, show_progress: bool = False) -> dict:
    """A ReplayBuffer store: zarr format 2, Blosc zstd, ``data/<key>`` time-major and ``meta/episode_ends`` only."""
    _new_output(out)
    index, lengths = _source_steps(store, store.active_episodes())
    try:
        root = zarr.open_group(str(out), mode="w-", zarr_format=2)
        with progress_bar(show_progress) as bar:
            task = bar.add_task("export", total=len(index) * len(store.keys), status="", unit="rows")
            for key in store.keys:
                spec = store.specs[key]
                steps = chunk_steps(spec)
                shuffle = numcodecs.Blosc.NOSHUFFLE if np.dtype(spec.dtype).itemsize == 1 else numcodecs.Blosc.SHUFFLE
                dst = root.create_array(f"data/{key}", shape=(len(index), *spec.shape), chunks=(steps, *spec.shape),
                                        dtype=spec.dtype, compressors=numcodecs.Blosc("zstd", 3, shuffle))
                for start in range(0, len(index), steps):  # whole output chunks, one write each
                    dst[start : start + steps] = store.read(f"data/{key}", index[start : start + steps])
                    bar.update(task, advance=min(steps, len(index) - start), status=key)
        ends = root.create_array("meta/episode_ends", shape=(len(lengths),), dtype="int64", chunks=(len(lengths),),
                                 compressors=None)
        ends[:] = np.cumsum(lengths)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {"episodes": len(lengths), "steps": int(len(index))}


def export_lerobot(store: EpisodeStore, out: Path, task: str | None = None, show_progress: bool = False) -> dict:
    """A LeRobot v3.0 dataset: one data parquet, one episodes parquet, tasks.parquet, info.json, one MP4 per camera."""
    _new_output(out)
    episodes = store.active_episodes()
    index, lengths = _source_steps(store, episodes)
    info = store.info
    fps = float(info["control_rate"])
    task = task or f"{info['scene']}"
    try:
        (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        (out / "data" / "chunk-000").mkdir(parents=True)
        table = _lerobot_frames(store, index, lengths, fps)
        pq.write_table(table, out / DATA_PATH.format(chunk_index=0, file_index=0))
        video_keys = [f"observation.images.{cam}" for cam in info["cameras"]]
        with progress_bar(show_progress) as bar:
            bar_task = bar.add_task("video", total=len(index) * len(video_keys), status="", unit="frames")
            for cam, key in zip(info["cameras"], video_keys):
                path = out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                _write_mp4(store, image_key(cam), index, path, fps, lambda n: bar.update(bar_task, advance=n))
        tasks = pd.DataFrame({"task_index": [0]}, index=pd.Index([task], name="task"))  # the task is the index
        tasks.to_parquet(out / "meta" / "tasks.parquet")
        _lerobot_episodes(lengths, video_keys, fps, task).to_parquet(
            out / "meta" / "episodes" / "chunk-000" / "file-000.parquet", index=False)
        features = _lerobot_features(store, video_keys, fps)
        (out / "meta" / "info.json").write_text(json.dumps({
            "codebase_version": LEROBOT_VERSION,
            "robot_type": info["scene"],
            "total_episodes": len(lengths),
            "total_frames": int(len(index)),
            "total_tasks": 1,
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": fps,
            "splits": {"train": f"0:{len(lengths)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
        }, indent=2))
        (out / "meta" / "stats.json").write_text(json.dumps(_stats(table)))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {"episodes": len(lengths), "frames": int(len(index)), "videos": len(video_keys)}


def _lerobot_frames(store: EpisodeStore, index: np.ndarray, lengths: np.ndarray, fps: float) -> pa.Table:
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    columns = {
        "observation.state": proprio(store.read("data/qpos", index), store.read("data/qvel", index)),
        "observation.contact_summary": store.read("data/contact_summary", index).astype(np.float32),
        "action": store.read("data/action", index).astype(np.float32),
    }
    table = {k: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]) for k, v in columns.items()}
    table.update({
        "reward": pa.array(store.read("data/reward", index).astype(np.float32)),
        "timestamp": pa.array((frame_index / fps).astype(np.float32)),
        "frame_index": pa.array(frame_index.astype(np.int64)),
        "episode_index": pa.array(np.repeat(np.arange(len(lengths)), lengths).astype(np.int64)),
        "index": pa.array(np.arange(len(index), dtype=np.int64)),
        "task_index": pa.array(np.zeros(len(index), np.int64)),
    })
    return pa.table(table)


def _lerobot_episodes(lengths: np.ndarray, video_keys: list[str], fps: float, task: str) -> pd.DataFrame:
    """One row per episode, in episode_index order (LeRobot looks rows up by position)."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    rows = {
        "episode_index": np.arange(len(lengths), dtype=np.int64),
        "tasks": [[task] for _ in lengths],
        "length": lengths.astype(np.int64),
        "data/chunk_index": np.zeros(len(lengths), np.int64),
        "data/file_index": np.zeros(len(lengths), np.int64),
        "dataset_from_index": starts.astype(np.int64),
        "dataset_to_index": ends.astype(np.int64),
    }
    for key in video_keys:
        rows.update({f"videos/{key}/chunk_index": np.zeros(len(lengths), np.int64),
                     f"videos/{key}/file_index": np.zeros(len(lengths), np.int64),
                     f"videos/{key}/from_timestamp": starts / fps,
                     f"videos/{key}/to_timestamp": ends / fps})
    rows.update({"meta/episodes/chunk_index": np.zeros(len(lengths), np.int64),
                 "meta/episodes/file_index": np.zeros(len(lengths), np.int64)})
    return pd.DataFrame(rows)


def _lerobot_features(store: EpisodeStore, video_keys: list[str], fps: float) -> dict:
    info = store.info
    h, w = info["image_size"]
    state_names = [f"qpos_{i}" for i in range(info["nq"])] + [f"qvel_{i}" for i in range(info["nv"])]
    groups = ["-".join(g) for g in info["contact_groups"]]
    features = {key: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                      "info": {"video.fps": fps, "video.height": h, "video.width": w, "video.channels": 3,
                               "video.codec": "h264", "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                               "has_audio": False}} for key in video_keys}
    features.update({
        "observation.state": {"dtype": "float32", "shape": [len(state_names)], "names": state_names},
        "observation.contact_summary": {"dtype": "float32", "shape": [len(groups)], "names": groups},
        "action": {"dtype": "float32", "shape": [len(info["action_spec"]["names"])],
                   "names": list(info["action_spec"]["names"])},
        "reward": {"dtype": "float32", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    })
    return features


def _stats(table: pa.Table) -> dict:
    """mean/std/min/max/count of the vector features (LeRobot normalises with these)."""
    out = {}
    for key in ("observation.state", "action"):
        values = np.stack(table[key].to_numpy(zero_copy_only=False)).astype(np.float64)
        out[key] = {"mean": values.mean(0).tolist(), "std": values.std(0).tolist(), "min": values.min(0).tolist(),
                    "max": values.max(0).tolist(), "count": [len(values)]}
    return out


def _write_mp4(store: EpisodeStore, key: str, index: np.ndarray, path: Path, fps: float, advance) -> None:
    """H.264 MP4 of the given steps of one camera, read a chunk at a time; frame i is shown at i / fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = chunk_steps(ArraySpec(tuple(store.arr(f"data/{key}").shape[1:]), "uint8"))
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p",
                            ffmpeg_params=["-crf", "18"]) as writer:
        for start in range(0, len(index), block):
            for frame in store.read(f"data/{key}", index[start : start + block]):
                writer.append_data(frame)
            advance(min(block, len(index) - start))
