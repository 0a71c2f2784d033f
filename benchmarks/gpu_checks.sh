#!/usr/bin/env bash
# The GPU checks in one go, for a lent CUDA machine whose python3 has torch but no simulator: the CUDA-graph tests,
# then the trainer's and the planner's benchmarks on a recorded push store (record one where MuJoCo renders:
# `teleworld generate --scene push --episodes 8 --steps 80 --out STORE`).
# Usage: bash benchmarks/gpu_checks.sh STORE [LOG_DIR]
set -uo pipefail
store=$1
logs=${2:-.}
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
timeout 150 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_cuda_graph.py 2>&1 | tee "$logs/tests.log"
timeout 330 python3 benchmarks/bench_train.py --data "$store" --no-cpu 2>&1 | tee "$logs/bench_train.log"
timeout 150 python3 benchmarks/bench_plan.py --device cuda --data "$store" 2>&1 | tee "$logs/bench_plan.log"
