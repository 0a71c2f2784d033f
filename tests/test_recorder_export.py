"""Exports read back: diffusion_policy's with zarr's format-2 reader, LeRobot's by its files, columns and videos."""

import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr

from recorder import EpisodeStore
from recorder.edit import mark_deleted
from recorder.export import export_diffusion_policy, export_lerobot, parse_renames
from teleworld.errors import TeleworldError

KEEP = [0, 2, 3, 4, 5]  # episode 1 is marked deleted and must not be exported


@pytest.fixture(scope="module")
def source(tmp_path_factory, push_store):
    path = tmp_path_factory.mktemp("export") / "src.zarr"
    shutil.copytree(push_store, path)
    with EpisodeStore.open(path, mode="a") as store:
        mark_deleted(store, [1])
    return EpisodeStore.open(path)


def test_diffusion_policy_export(tmp_path, source):
    out = tmp_path / "dp.zarr"
    assert export_diffusion_policy(source, out) == {"episodes": 5, "steps": 150}
    root = zarr.open_group(out, mode="r", zarr_format=2)
    assert sorted(root["meta"].keys()) == ["episode_ends"]
    assert root["meta/episode_ends"][:].tolist() == [30, 60, 90, 120, 150]
    assert root["meta/episode_ends"].dtype == np.int64
    expected = {k: np.concatenate([source.episode(e)[k] for e in KEEP]) for k in source.keys}
    assert sorted(root["data"].array_keys()) == sorted(expected)
    for key, values in expected.items():
        assert np.array_equal(root[f"data/{key}"][:], values), key
    meta = json.loads((out / "data" / "image_overhead" / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and meta["compressor"]["id"] == "blosc" and meta["compressor"]["cname"] == "zstd"
    with pytest.raises(TeleworldError, match="already exists"):
        export_diffusion_policy(source, out)


def test_lerobot_v3_export(tmp_path, source):
    out = tmp_path / "lerobot"
    assert export_lerobot(source, out, task="push the box") == {"episodes": 5, "frames": 150, "videos": 1}
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20.0
    assert info["total_episodes"] == 5 and info["total_frames"] == 150 and info["splits"] == {"train": "0:5"}
    key = "observation.images.overhead"
    assert info["features"][key]["dtype"] == "video" and info["features"][key]["shape"] == [64, 64, 3]
    assert info["features"]["action"]["names"] == ["pusher_vx", "pusher_vy"]

    data = pq.read_table(out / info["data_path"].format(chunk_index=0, file_index=0)).to_pandas()
    for column in ("timestamp", "frame_index", "episode_index", "index", "task_index", "action", "observation.state"):
        assert column in data.columns, column
    assert len(data) == 150 and data["index"].tolist() == list(range(150))
    assert data["episode_index"].tolist() == [e for e in range(5) for _ in range(30)]
    actions = np.concatenate([source.episode(e)["action"] for e in KEEP])
    assert np.array_equal(np.stack(data["action"].to_numpy()), actions)

    tasks = pd.read_parquet(out / "meta" / "tasks.parquet")
    assert tasks.index.tolist() == ["push the box"] and tasks["task_index"].tolist() == [0]
    episodes = pd.read_parquet(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    assert episodes["episode_index"].tolist() == [0, 1, 2, 3, 4]
    assert episodes["dataset_from_index"].tolist() == [0, 30, 60, 90, 120]
    assert episodes["length"].tolist() == [30] * 5

    video = out / info["video_path"].format(video_key=key, chunk_index=0, file_index=0)
    reader = imageio.get_reader(video)
    assert reader.get_meta_data()["fps"] == 20.0
    frames = np.stack([frame for frame in reader])  # iterate: the reported length is not usable
    assert frames.shape == (150, 64, 64, 3)
    # every frame's timestamp matches its time in the concatenated video within 1e-4 s
    video_time = episodes[f"videos/{key}/from_timestamp"].to_numpy()[data["episode_index"]] + data["timestamp"]
    assert np.abs(video_time.to_numpy() - np.arange(150) / 20.0).max() < 1e-4
    truth = np.concatenate([source.episode(e)["image_overhead"] for e in KEEP])
    assert np.abs(frames.astype(int) - truth).mean() < 4  # h264 at crf 18: close to the recorded frames


def test_lerobot_stats_cover_every_feature_with_quantiles(tmp_path, source):
    out = tmp_path / "lerobot"
    export_lerobot(source, out)
    stats = json.loads((out / "meta" / "stats.json").read_text())
    info = json.loads((out / "meta" / "info.json").read_text())
    assert set(stats) == set(info["features"])  # images included
    fields = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    for key, feature in info["features"].items():
        assert set(stats[key]) == fields, key
        shape = (3, 1, 1) if feature["dtype"] == "video" else tuple(feature["shape"])
        for name in fields - {"count"}:
            assert np.asarray(stats[key][name]).shape == shape, (key, name)
    actions = np.concatenate([source.episode(e)["action"] for e in KEEP]).astype(np.float64)
    assert stats["action"]["count"] == [150]
    assert np.allclose(stats["action"]["mean"], actions.mean(0)) and np.allclose(stats["action"]["std"], actions.std(0))
    assert np.allclose(stats["action"]["q90"], np.quantile(actions, 0.9, axis=0))
    assert stats["frame_index"]["max"] == [29.0] and stats["episode_index"]["q50"] == [2.0]
    frames = np.concatenate([source.episode(e)["image_overhead"] for e in KEEP]).reshape(-1, 3) / 255.0
    image = stats["observation.images.overhead"]
    assert image["count"] == [150]
    assert np.allclose(np.asarray(image["mean"])[:, 0, 0], frames.mean(0))
    assert np.allclose(np.asarray(image["q01"])[:, 0, 0], np.quantile(frames, 0.01, axis=0))
    assert 0 <= np.min(image["min"]) <= np.max(image["max"]) <= 1


def test_lerobot_video_has_a_short_gop(tmp_path, source):
    """A keyframe at least every 2 frames, so LeRobot's random window reads decode little."""
    import subprocess

    import imageio_ffmpeg

    out = tmp_path / "lerobot"
    export_lerobot(source, out)
    video = out / "videos" / "observation.images.overhead" / "chunk-000" / "file-000.mp4"
    # decode only the keyframes and count them
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-skip_frame", "nokey", "-i", str(video),
                           "-f", "framemd5", "-"], capture_output=True, text=True, check=True)
    keyframes = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    assert len(keyframes) >= 150 // 2


def test_diffusion_policy_export_renames_keys(tmp_path, source):
    out = tmp_path / "dp.zarr"
    rename = parse_renames(["image_overhead=img", "qpos=agent_pos"])
    export_diffusion_policy(source, out, rename=rename)
    root = zarr.open_group(out, mode="r", zarr_format=2)
    keys = set(root["data"].array_keys())
    assert {"img", "agent_pos", "action"} <= keys and not {"image_overhead", "qpos"} & keys
    assert np.array_equal(root["data/img"][:30], source.episode(0)["image_overhead"])
    with pytest.raises(TeleworldError, match="cannot rename nope"):
        export_diffusion_policy(source, tmp_path / "bad.zarr", rename={"nope": "x"})
    with pytest.raises(TeleworldError, match="two arrays the name action"):
        export_diffusion_policy(source, tmp_path / "bad2.zarr", rename={"qpos": "action"})
    with pytest.raises(TeleworldError, match="old=new"):
        parse_renames(["img"])
    assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "bad2.zarr").exists()
