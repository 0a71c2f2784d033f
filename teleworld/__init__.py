"""teleworld: teleoperate MuJoCo robots, record Zarr episodes, train world models, replay them."""

import os

__version__ = "0.1.0"

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's import banner is not ours to print
# OpenMP threads that wait sleep instead of spinning: beside another job, a spinning barrier made CPU training
# ten times slower instead of costing its share (benchmarks/bench_threads.py). Read when torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
