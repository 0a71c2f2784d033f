"""Exports for peers' loaders: diffusion_policy's ReplayBuffer (zarr format 2) and LeRobot v3.0 (parquet + MP4).

Only active (not deleted) episodes are exported, renumbered 0..N-1 in store order. A scene's declared per-step
extras (schema 1.3) go along: as ``data/<name>`` arrays in the ReplayBuffer, as float32 ``<name>`` features in LeRobot.
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

from recorder.schema import ArraySpec, extra_names, image_key, proprio
from recorder.store import EpisodeStore, chunk_steps
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar

LEROBOT_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
GOP = 2  # frames per keyframe interval of the MP4s (LeRobot's own encoder uses g=2): random reads decode little
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's stats.json quantiles
STATS_PIXELS = 2_000_000  # at most this many pixels per camera (evenly spaced frames) enter the image stats
STATS_SIZE = 150  # frames larger than 2x this are subsampled in space to about this size (as LeRobot does)


def _new_output(out: Path) -> None:
    if out.exists():
        raise TeleworldError(f"{out} already exists; exports write a new directory")


def _source_steps(store: EpisodeStore, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(store step of every exported step, exported episode lengths)."""
    slices = [store.episode_slice(int(e)) for e in episodes]
    if not slices:
        raise TeleworldError(f"{store.path} has no active episodes to export")
    return np.concatenate([np.arange(s.start, s.stop) for s in slices]), np.array([s.stop - s.start for s in slices])


def parse_renames(pairs: list[str] | None) -> dict[str, str]:
    """``["image_overhead=img", ...]`` (the CLI's repeatable ``--rename old=new``) -> {"image_overhead": "img"}."""
    renames = {}
    for pair in pairs or []:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise TeleworldError(f"--rename expects old=new, got {pair!r}")
        renames[old.strip()] = new.strip()
    return renames


def export_diffusion_policy(store: EpisodeStore, out: Path, show_progress: bool = False,
                            rename: dict[str, str] | None = None) -> dict:
    """A ReplayBuffer store: zarr format 2, Blosc zstd, ``data/<key>`` time-major and ``meta/episode_ends`` only.

    ``rename`` maps store keys to the names a diffusion_policy task config expects (``{"image_overhead": "img"}``);
    keys not named keep theirs."""
    _new_output(out)
    names = _renamed(store.keys, rename or {})
    index, lengths = _source_steps(store, store.active_episodes())
    try:
        root = zarr.open_group(str(out), mode="w-", zarr_format=2)
        with progress_bar(show_progress) as bar:
            task = bar.add_task("export", total=len(index) * len(store.keys), status="", unit="rows")
            for key in store.keys:
                spec = store.specs[key]
                steps = chunk_steps(spec)
                shuffle = numcodecs.Blosc.NOSHUFFLE if np.dtype(spec.dtype).itemsize == 1 else numcodecs.Blosc.SHUFFLE
                dst = root.create_array(f"data/{names[key]}", shape=(len(index), *spec.shape),
                                        chunks=(steps, *spec.shape),
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


def _renamed(keys: list[str], rename: dict[str, str]) -> dict[str, str]:
    """{store key: exported name}; refuses unknown keys and names given twice."""
    unknown = sorted(set(rename) - set(keys))
    if unknown:
        raise TeleworldError(f"cannot rename {', '.join(unknown)}: the store has {', '.join(keys)}")
    names = {k: rename.get(k, k) for k in keys}
    taken = [n for n in set(names.values()) if list(names.values()).count(n) > 1]
    if taken:
        raise TeleworldError(f"the renames give two arrays the name {', '.join(sorted(taken))}")
    if any("/" in n or n.startswith(".") for n in names.values()):
        raise TeleworldError("exported names may not contain '/' or start with '.'")
    return names


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
        stats = _stats(table)
        for cam, key in zip(info["cameras"], video_keys):
            stats[key] = _image_stats(store, image_key(cam), index)
        (out / "meta" / "stats.json").write_text(json.dumps(stats))
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
    for name in extra_names(store.info):  # the scene's own per-step arrays, e.g. arm's ee_pose, joint_command
        columns[name] = store.read(f"data/{name}", index).reshape(len(index), -1).astype(np.float32)
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
        **{name: {"dtype": "float32", "shape": [int(np.prod(extra["shape"]))], "names": extra.get("names")}
           for name, extra in info.get("step_extras", {}).items()},
        "reward": {"dtype": "float32", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    })
    return features


def _feature_stats(values: np.ndarray, axis: int | tuple[int, ...]) -> dict:
    """LeRobot's per-feature stats: min, max, mean, std, count and the QUANTILES, reduced over ``axis``."""
    values = values.astype(np.float64)
    out = {"min": values.min(axis), "max": values.max(axis), "mean": values.mean(axis), "std": values.std(axis)}
    out.update({name: np.quantile(values, q, axis=axis) for name, q in QUANTILES.items()})
    return out


def _stats(table: pa.Table) -> dict:
    """Stats of every column of the frames table: vectors per dimension (D,), scalars as (1,)."""
    out = {}
    for key in table.column_names:
        column = table[key]
        if pa.types.is_fixed_size_list(column.type):
            values = np.stack(column.to_numpy(zero_copy_only=False))
        else:
            values = column.to_numpy()[:, None]
        stats = _feature_stats(values, axis=0)
        out[key] = {**{k: v.tolist() for k, v in stats.items()}, "count": [len(values)]}
    return out


def _image_stats(store: EpisodeStore, key: str, index: np.ndarray) -> dict:
    """Per-channel stats of a camera's exported frames scaled to [0, 1], each of shape (3, 1, 1) as LeRobot
    stores them. Like LeRobot it samples: evenly spaced frames, large ones strided in space, STATS_PIXELS in all."""
    h, w = store.arr(f"data/{key}").shape[1:3]
    stride = max(h, w) // STATS_SIZE if max(h, w) >= 2 * STATS_SIZE else 1
    per_frame = -(-h // stride) * -(-w // stride)
    count = min(len(index), max(1, STATS_PIXELS // per_frame))
    chosen = np.unique(np.round(np.linspace(0, len(index) - 1, count)).astype(np.int64))
    block = chunk_steps(ArraySpec((h, w, 3), "uint8"))
    pixels = np.concatenate([store.read(f"data/{key}", index[chosen[i : i + block]])[:, ::stride, ::stride]
                             .reshape(-1, 3) for i in range(0, len(chosen), block)])  # (frames * H * W, 3)
    stats = _feature_stats(pixels / 255.0, axis=0)
    return {**{k: v.reshape(3, 1, 1).tolist() for k, v in stats.items()}, "count": [len(chosen)]}


def _write_mp4(store: EpisodeStore, key: str, index: np.ndarray, path: Path, fps: float, advance) -> None:
    """H.264 MP4 of the given steps of one camera, read a chunk at a time; frame i is shown at i / fps; a keyframe
    at least every GOP frames, so a random read decodes at most GOP - 1 frames before the one it wants."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = chunk_steps(ArraySpec(tuple(store.arr(f"data/{key}").shape[1:]), "uint8"))
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p",
                            ffmpeg_params=["-crf", "18", "-g", str(GOP)]) as writer:
        for start in range(0, len(index), block):
            for frame in store.read(f"data/{key}", index[start : start + block]):
                writer.append_data(frame)
            advance(min(block, len(index) - start))
