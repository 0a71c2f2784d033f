"""Recorder benchmark: ratios measured in one run on the same rendered push episodes.

    python benchmarks/bench_recorder.py [--episodes 10 --steps 120 --image-size 64]

1. streaming write of the full schema (EpisodeWriter.add per step, committed per episode) vs EpisodeStore writing
   the same arrays at once (as one episode, and as the same episodes one write_episode each) vs plain zarr
   appending them (one call per array, same codec and time chunk), and the fixed cost each episode adds;
2. loader windows/s (WindowLoader with its RAM cache, and reading the store) vs an in-RAM numpy gather of the same
   windows;
3. bytes per frame with the chosen compression (Blosc zstd 3), next to the alternatives it was chosen over.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import zarr  # noqa: E402
import zarr.codecs  # noqa: E402

from recorder import EpisodeStore, EpisodeWriter  # noqa: E402
from recorder.loader import WindowLoader  # noqa: E402
from recorder.schema import CONTACT_SPECS, image_key  # noqa: E402
from recorder.schema import step_specs  # noqa: E402
from recorder.store import CHUNK_BYTES, CONTACTS_PER_STEP, compressor, time_chunk  # noqa: E402
from teleop.devices.scripted import scripted_operator  # noqa: E402
from teleop.loop import step_record  # noqa: E402
from teleop.scenes import load  # noqa: E402


def render_episodes(episodes: int, steps: int, image_size: int) -> tuple[dict, list[list[tuple[dict, dict]]]]:
    """Real rendered push episodes, kept in memory so that only the writing is timed."""
    scene = load("push", image_size=(image_size, image_size))
    device = scripted_operator(scene)
    out = []
    with device:
        for seed in range(episodes):
            obs = scene.reset(seed)
            device.on_reset(obs, np.random.default_rng(seed))
            records = []
            for t in range(steps):
                action = scene.action_spec.clip(device.get_action(obs))
                records.append(step_record(obs, action, time.monotonic()))
                obs = scene.step(action)
            out.append(records)
    info = scene.info()
    scene.close()
    return info, out


class TimedStore(EpisodeStore):
    """An EpisodeStore that adds up the seconds spent committing episodes (the end marker and its info)."""

    commit_seconds = 0.0

    def commit_episode(self, info: dict) -> int:
        t0 = time.perf_counter()
        index = super().commit_episode(info)
        self.commit_seconds += time.perf_counter() - t0
        return index


def stream_write(path: Path, info: dict, episodes: list, chunk_bytes: int) -> dict[str, float]:
    """Seconds to stream every step through EpisodeWriter.add with one commit per episode, then close the store
    (which moves the tail file into the chunk files): in all, in end() (the episode's last flush and the commit),
    in the commit alone."""
    ending = 0.0
    with TimedStore.create(path, info, chunk_bytes) as store:  # created before the clock starts, as for plain zarr
        writer = EpisodeWriter(store)
        t0 = time.perf_counter()
        for seed, records in enumerate(episodes):
            writer.begin(seed=seed)
            for step, contacts in records:
                writer.add(step, contacts)
            t1 = time.perf_counter()
            writer.end()
            ending += time.perf_counter() - t1
    seconds = time.perf_counter() - t0
    return {"all": seconds, "end": ending, "commit": store.commit_seconds}


def stacked(episodes: list) -> tuple[dict, dict]:
    """Every step's arrays and contact rows stacked along time (done before timing any bulk write)."""
    records = [r for ep in episodes for r in ep]
    steps = {k: np.stack([np.asarray(s[k]) for s, _ in records]) for k in records[0][0]}
    contacts = {k: np.concatenate([np.asarray(c[k]).reshape(-1, *CONTACT_SPECS[k].shape) for _, c in records])
                for k in CONTACT_SPECS}
    return steps, contacts


def bulk_write(path: Path, info: dict, arrays: tuple[dict, dict], chunk_bytes: int) -> float:
    """Seconds for EpisodeStore to write the same arrays as one episode into a new store (created untimed) and
    close it."""
    steps, contacts = arrays
    with EpisodeStore.create(path, info, chunk_bytes) as store:
        t0 = time.perf_counter()
        store.write_episode(steps, contacts, {"bulk": True})
    return time.perf_counter() - t0


def bulk_episodes_write(path: Path, info: dict, episodes: list, chunk_bytes: int) -> float:
    """Seconds for EpisodeStore to write the same episodes one ``write_episode`` each (as `teleworld generate`
    and imports do: the same commits as streaming, no per-step calls), arrays stacked before the clock starts."""
    arrays = [stacked([records]) for records in episodes]
    with EpisodeStore.create(path, info, chunk_bytes) as store:
        t0 = time.perf_counter()
        for seed, (steps, contacts) in enumerate(arrays):
            store.write_episode(steps, contacts, {"seed": seed})
    return time.perf_counter() - t0


def frames_write(path: Path, info: dict, frames: np.ndarray, episodes: int, chunk_bytes: int, stream: bool) -> float:
    """Seconds for EpisodeStore to write one camera's frames alone: streamed as EpisodeWriter flushes them (whole
    blocks, then each episode's rest) or all at once."""
    key = image_key(info["cameras"][0])
    with EpisodeStore.create(path, info, chunk_bytes) as store:
        block, pieces = store.block(f"data/{key}"), []
        for episode in np.array_split(frames, episodes) if stream else [frames]:
            pieces += [episode[i : i + block] for i in range(0, len(episode), block)] if stream else [episode]
        t0 = time.perf_counter()
        for piece in pieces:
            store.append(f"data/{key}", piece)
        return time.perf_counter() - t0


def plain_zarr_write(path: Path, info: dict, arrays: tuple[dict, dict], chunk_bytes: int) -> float:
    """Seconds for plain zarr to append the same arrays to empty ones, one ``append`` call each (the baseline).

    Same codec and the same time chunk as the store (unsharded), arrays created before the clock starts."""
    steps, contacts = arrays
    rows = time_chunk(step_specs(info), chunk_bytes)
    root = zarr.open_group(path, mode="w-", zarr_format=3)
    targets = []
    for group, values, chunk in (("data", steps, rows), ("contacts", contacts, rows * CONTACTS_PER_STEP)):
        for key, v in values.items():
            if group == "data" and key not in step_specs(info):
                continue
            arr = root.create_array(f"{group}/{key}", shape=(0, *v.shape[1:]), dtype=v.dtype,
                                    chunks=(chunk, *v.shape[1:]), compressors=compressor(str(v.dtype)))
            targets.append((arr, v))
    t0 = time.perf_counter()
    for arr, v in targets:
        arr.append(v)
    return time.perf_counter() - t0


def loader_rates(path: Path, key: str, batches: int = 200, batch: int = 16, length: int = 16) -> dict[str, float]:
    """Windows/s of the loader (RAM cache, store reads) and of numpy fancy indexing on the same windows."""
    keys = [key, "action", "qpos", "qvel", "contact_summary"]
    ram = WindowLoader(path, length, batch, keys=keys, cache="ram")
    chunks = WindowLoader(path, length, batch, keys=keys, cache="chunks")
    rng = np.random.default_rng(0)
    starts = [rng.choice(ram.windows, batch) for _ in range(batches)]
    store = EpisodeStore.open(path)
    arrays = {k: store.array(k)[: store.num_steps] for k in keys}
    rates = {}
    t0 = time.perf_counter()
    for s in starts:
        idx = s[:, None] + np.arange(length)[None]
        {k: a[idx] for k, a in arrays.items()}
    rates["numpy"] = batches * batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for s in starts:
        ram.gather(s)
    rates["loader_ram"] = batches * batch / (time.perf_counter() - t0)
    few = starts[: batches // 10]
    t0 = time.perf_counter()
    for s in few:
        chunks.gather(s)
    rates["loader_chunks"] = len(few) * batch / (time.perf_counter() - t0)
    return rates


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compression_table(frames: np.ndarray, tmp: Path) -> list[tuple[str, float, float]]:
    """(codec, bytes per frame, MB/s written) for the chosen codec and the alternatives."""
    rows = []
    chunk = max(1, (2 << 20) // frames[0].nbytes)
    for name, codec in [("blosc zstd 3 (chosen)", zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle")),
                        ("blosc zstd 1", zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")),
                        ("blosc lz4 5", zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")),
                        ("blosc zstd 7", zarr.codecs.BloscCodec(cname="zstd", clevel=7, shuffle="noshuffle"))]:
        seconds = []
        for attempt in range(3):  # best of three: the machine is shared
            path = tmp / f"codec-{len(rows)}-{attempt}.zarr"
            arr = zarr.create_array(path, shape=frames.shape, chunks=(chunk, *frames.shape[1:]), dtype="uint8",
                                    compressors=codec)
            t0 = time.perf_counter()
            arr[:] = frames
            seconds.append(time.perf_counter() - t0)
        rows.append((name, dir_bytes(path) / len(frames), frames.nbytes / min(seconds) / 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--chunk-mb", type=float, default=CHUNK_BYTES / 2**20, help="Raw MB per chunk along time.")
    args = parser.parse_args()
    chunk_bytes = int(args.chunk_mb * 2**20)
    t_start = time.perf_counter()
    info, episodes = render_episodes(args.episodes, args.steps, args.image_size)
    n = args.episodes * args.steps
    print(f"rendered {args.episodes} push episodes x {args.steps} steps at {args.image_size}x{args.image_size} "
          f"in {time.perf_counter() - t_start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arrays = stacked(episodes)
        best = {}  # best of five: the machine is shared
        for i in range(5):
            for name, run in (("plain", plain_zarr_write), ("bulk", bulk_write)):
                best[name] = min(best.get(name, np.inf), run(tmp / f"{name}{i}.zarr", info, arrays, chunk_bytes))
            best["bulk_episodes"] = min(best.get("bulk_episodes", np.inf),
                                        bulk_episodes_write(tmp / f"episodes{i}.zarr", info, episodes, chunk_bytes))
            result = stream_write(tmp / f"stream{i}.zarr", info, episodes, chunk_bytes)
            best["stream"] = min(best.get("stream", np.inf), result["all"])
            for k in ("end", "commit"):
                best[k] = min(best.get(k, np.inf), result[k])
        frames = arrays[0][image_key(info["cameras"][0])]
        for name, stream in (("frames_stream", True), ("frames_bulk", False)):
            best[name] = min(frames_write(tmp / f"{name}{i}.zarr", info, frames, len(episodes), chunk_bytes, stream)
                             for i in range(5))
        rate = {k: n / best[k] for k in ("plain", "bulk", "bulk_episodes", "stream", "frames_stream", "frames_bulk")}
        print(f"frames alone: streamed (whole blocks, then each episode's rest) {rate['frames_stream']:,.0f} frames/s, "
              f"one bulk write {rate['frames_bulk']:,.0f} frames/s, ratio "
              f"{rate['frames_stream'] / rate['frames_bulk']:.2f}x (goal >= 0.8)")
        e = len(episodes)
        print(f"writes, all {len(arrays[0])} arrays + contacts ({n} steps, best of 5): plain zarr bulk append "
              f"{rate['plain']:,.0f} steps/s; EpisodeStore bulk (one episode) {rate['bulk']:,.0f} steps/s "
              f"({rate['bulk'] / rate['plain']:.2f}x plain); EpisodeWriter streaming ({e} episodes, add per step, "
              f"commit per episode) {rate['stream']:,.0f} steps/s")
        print(f"ratios: streaming / plain zarr bulk {rate['stream'] / rate['plain']:.2f}x (goal >= 1), "
              f"streaming / EpisodeStore bulk {rate['stream'] / rate['bulk']:.2f}x (goal >= 0.8), "
              f"EpisodeStore bulk / plain zarr bulk {rate['bulk'] / rate['plain']:.2f}x")
        print(f"the same {e} episodes, one write_episode each (generate's path, the same commits): "
              f"{rate['bulk_episodes']:,.0f} steps/s; streaming / that {rate['stream'] / rate['bulk_episodes']:.2f}x "
              "(what streaming step by step costs over writing whole episodes)")
        print(f"per episode: fixed cost {(best['stream'] - best['bulk']) / e * 1e3:.1f} ms (streaming minus bulk, "
              f"per episode), end() {best['end'] / e * 1e3:.1f} ms (last flush + commit), commit "
              f"{best['commit'] / e * 1e3:.1f} ms (goal <= 10)")
        key = image_key(info["cameras"][0])
        rates = loader_rates(tmp / "stream0.zarr", key)
        ram, disk = rates["loader_ram"] / rates["numpy"], rates["loader_chunks"] / rates["numpy"]
        print(f"loader (16 windows x 16 steps, 5 keys): numpy gather {rates['numpy']:,.0f} windows/s, "
              f"loader RAM cache {rates['loader_ram']:,.0f} ({ram:.2f}x, goal >= 0.5), "
              f"loader reading the store {rates['loader_chunks']:,.0f} ({disk:.3f}x)")
        image_bytes = dir_bytes(tmp / "stream0.zarr" / "data" / key)
        total = dir_bytes(tmp / "stream0.zarr")
        raw = args.image_size * args.image_size * 3
        print(f"storage: {image_bytes / n:,.0f} bytes per frame compressed vs {raw:,} raw "
              f"({raw * n / image_bytes:.1f}x); whole store {total / n:,.0f} bytes per step")
        frames = np.stack([s[key] for ep in episodes for s, _ in ep])
        for name, per_frame, mbps in compression_table(frames, tmp):
            print(f"  {name:22s} {per_frame:8,.0f} bytes/frame  {mbps:7,.0f} MB/s written")
    print(f"total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
