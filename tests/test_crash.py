"""A writer killed with SIGKILL at any moment leaves every committed episode readable; validate and repair agree."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from recorder import EpisodeStore, EpisodeWriter
from recorder.health import repair, validate

# Records 4 deterministic episodes (wall_time = t), counting file writes (zarr's and the store's own); with KILL_AT=n
# it is killed by SIGKILL in the middle of its n-th file write, leaving that write's temp file half written, as a real
# kill would.
WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import zarr.storage._local as local
    import recorder.store as store_module
    from recorder import EpisodeStore, EpisodeWriter
    from teleop.loop import step_record
    from teleop.scenes import load

    kill_at, writes = int(os.environ.get("KILL_AT", "0")), [0]
    real_put = local._put

    def put(path, value, exclusive=False):
        writes[0] += 1
        if writes[0] == kill_at:
            data = bytes(value.as_buffer_like())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".deadbeef.partial").write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_put(path, value, exclusive)

    def write_file(path, data):  # the store writes small arrays' chunks itself, the same atomic way
        writes[0] += 1
        if writes[0] == kill_at:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(path.name + ".deadbeef.partial").write_bytes(bytes(data)[: len(bytes(data)) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write_file(path, data)

    local._put = put
    real_write_file = store_module.write_file
    store_module.write_file = write_file
    scene = load("push")
    store = EpisodeStore.create(sys.argv[1], scene.info(), chunk_bytes=12288 * 8)
    writer = EpisodeWriter(store)
    for seed in range(4):
        writer.begin(seed=seed)
        obs = scene.reset(seed)
        rng = np.random.default_rng(seed)
        for t in range(25):
            action = scene.action_spec.clip(rng.uniform(-1, 1, 2))
            writer.add(*step_record(obs, action, float(t)))
            obs = scene.step(action)
        writer.end(success=True)
        print("committed", seed, flush=True)
    print("writes", writes[0], flush=True)
    """
)


def _run(path: Path, kill_at: int = 0) -> tuple[int, list[str]]:
    env = {**os.environ, "MUJOCO_GL": "egl", "KILL_AT": str(kill_at)}
    proc = subprocess.run([sys.executable, "-c", WRITER, str(path)], capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout.split("\n")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted recording and how many file writes it took."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    rc, lines = _run(path)
    assert rc == 0, lines
    return EpisodeStore.open(path), int(lines[-2].split()[1])


def _same_episode(a: EpisodeStore, i: int, b: EpisodeStore, j: int, steps: int | None = None) -> None:
    ea, eb = a.episode(i), b.episode(j)
    for key in ea:
        assert np.array_equal(ea[key], eb[key][:steps]), key
    oa, ra = a.episode_contacts(i)
    ob, rb = b.episode_contacts(j)
    assert np.array_equal(oa, ob[: len(oa)])
    for key in ra:
        assert np.array_equal(ra[key], rb[key][: oa[-1]]), key


@pytest.mark.parametrize("fraction", [0.01, 0.06, 0.19, 0.33, 0.42, 0.5, 0.61, 0.77, 0.9, 0.99])
def test_sigkill_at_any_write_loses_no_committed_episode(tmp_path, reference, fraction):
    ref, total = reference
    path = tmp_path / "s.zarr"
    kill_at = max(1, int(total * fraction))
    rc, lines = _run(path, kill_at)
    assert rc == -signal.SIGKILL
    printed = sum(line.startswith("committed") for line in lines)
    if not path.exists():  # killed while creating the store, which is renamed into place only when complete
        assert printed == 0 and list(tmp_path.glob("s.zarr.creating-*"))
        return
    store = EpisodeStore.open(path)
    assert store.num_episodes >= printed
    for i in range(store.num_episodes):
        _same_episode(store, i, ref, i)
        assert store.episode_info(i)["seed"] == i
    assert validate(store).ok, validate(store).problems

    salvaged_path = tmp_path / "salvaged.zarr"
    shutil.copytree(path, salvaged_path)
    with EpisodeStore.open(salvaged_path, mode="a") as salvaged:
        result = repair(salvaged, salvage=True)
        assert validate(salvaged).ok and salvaged.uncommitted_steps() == 0
        assert not list(salvaged_path.rglob("*.partial"))
        if result["episode"] is not None:  # the salvaged tail is a true prefix of the interrupted episode
            n = result["episode"]
            assert salvaged.episode_info(n)["partial"] is True and salvaged.episode_info(n)["seed"] == n
            _same_episode(salvaged, n, ref, n, steps=result["salvaged_steps"])
        assert salvaged.num_episodes == store.num_episodes + (result["episode"] is not None)

    with EpisodeStore.open(path, mode="a") as cut:  # the dead writer's lock is taken over
        repair(cut)
        assert cut.uncommitted_steps() == 0 and cut.num_episodes == store.num_episodes
        assert validate(cut).ok


def test_sigkill_of_a_real_paced_loop(tmp_path):
    """The teleop loop at its control rate, killed from outside while an episode is open."""
    script = textwrap.dedent(
        """
        import sys
        from recorder import EpisodeStore, EpisodeWriter
        from teleop.devices.scripted import scripted_operator
        from teleop.loop import run_episode
        from teleop.scenes import load

        scene = load("push")
        writer = EpisodeWriter(EpisodeStore.create(sys.argv[1], scene.info(), chunk_bytes=12288 * 8))
        device = scripted_operator(scene)
        for seed in range(100):
            writer.begin(seed=seed)
            run_episode(scene, device, writer, 25, seed, rate=200)
            writer.end()
            print("committed", seed, flush=True)
        """
    )
    path = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "MUJOCO_GL": "egl"})
    committed = -1
    while committed < 1:
        line = proc.stdout.readline()
        assert line, "writer died early"
        committed = int(line.split()[1])
    time.sleep(0.07)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = EpisodeStore.open(path)
    assert store.num_episodes >= 2 and validate(store).ok
    timing = store.episode_info(0)["timing"]
    assert 2.0 < timing["dt_p50_ms"] < 50.0  # paced at 200 Hz: about 5 ms per step
    appender = EpisodeStore.open(path, mode="a")
    EpisodeWriter(appender)  # a new writer cuts the half episode
    assert appender.uncommitted_steps() == 0 and appender.num_episodes == store.num_episodes
    appender.close()
