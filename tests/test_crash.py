"""A writer killed with SIGKILL in the middle of an episode leaves every committed episode readable."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from recorder import EpisodeStore, EpisodeWriter

WRITER = textwrap.dedent(
    """
    import sys
    from recorder import EpisodeStore, EpisodeWriter
    from teleop.devices.scripted import scripted_operator
    from teleop.loop import run_episode
    from teleop.scenes import load

    scene = load("push")
    store = EpisodeStore.create(sys.argv[1], scene.info(), chunk_bytes=12288 * 8)
    writer = EpisodeWriter(store)
    device = scripted_operator(scene)
    for seed in range(100):
        writer.begin(seed=seed)
        run_episode(scene, device, writer, 25, seed)
        writer.end()
        print("committed", seed, flush=True)
    """
)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13])
def test_sigkill_mid_episode_loses_no_committed_episode(tmp_path, delay):
    path = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "MUJOCO_GL": "egl"})
    committed = -1
    while committed < 2:
        line = proc.stdout.readline()
        assert line, "writer died early"
        committed = int(line.split()[1])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = EpisodeStore.open(path)
    assert store.num_episodes >= 3
    for i in range(store.num_episodes):
        ep = store.episode(i)
        assert len(ep["action"]) == 25 and np.isfinite(ep["action"]).all()
        assert store.episode_info(i)["seed"] == i
    # the lock of the dead writer is stale: a new writer takes over and cuts the half episode
    appender = EpisodeStore.open(path, mode="a")
    EpisodeWriter(appender)
    assert appender.uncommitted_steps() == 0
    assert appender.num_episodes == store.num_episodes
    appender.close()
