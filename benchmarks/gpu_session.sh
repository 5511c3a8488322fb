#!/usr/bin/env bash
# One lent-GPU session, every GPU-only check in one call: environment facts, the kernel tests on
# the GPU (real Triton), the kernel benchmark, the pipelines end to end on CUDA, and (with
# BENCH_DIT=1) the DiT benchmark at real widths. Run from the repository root on the device
# machine with the wheels listed in benchmarks/README.md in .whl/. Output files go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -15 | tee "$out/kernel_tests.log"
timeout 60 python3 -m benchmarks.gpu_pipelines --out-dir "$out" 2>&1 | grep -v -i warn | tee "$out/gpu_pipelines.log"
timeout 200 python3 -m benchmarks.bench_kernels --compile-budget-s 60 --out-dir "$out" 2>&1 | grep -v -i warn \
  | tee "$out/bench_kernels.log"
if [ "${BENCH_DIT:-0}" = 1 ]; then
  timeout 300 python3 -m benchmarks.bench_dit --gpu --layers 2 --out-dir "$out" 2>&1 | grep -v -i warn \
    | tee "$out/bench_dit.log"
fi
