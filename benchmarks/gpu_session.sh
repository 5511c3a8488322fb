#!/usr/bin/env bash
# One lent-GPU session, every GPU-only check in one call: environment facts, the CUDA C++ backend's
# build (the image's nvcc), the kernel tests on the GPU (real Triton and the cuda backend), the
# kernel benchmark (triton and cuda side by side), the pipelines end to end on CUDA, and (with
# BENCH_DIT=1) the DiT benchmark at real widths and (with BENCH_CACHE=1) the step-cache sweep at the
# ti2v-5B width. Run from the repository root on the device machine with the wheels listed in
# benchmarks/README.md in .whl/. Output files go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
# Build the cuda backend once, so the kernel tests and the kernel benchmark load it (a failed build
# warns and its tests skip; the log says why); its compile check is this build, not run again. It
# goes to its own build folder, which only those steps name: elsewhere (the pipelines, bench_dit)
# auto finds no cuda build and stays on triton.
cuda_build=/tmp/wan_kernels_cuda_build
WAN_KERNELS_BUILD_DIR=$cuda_build timeout 300 python3 -c "import time, wan_kernels; t = time.time(); \
wan_kernels.set_backend('cuda'); print(f'cuda backend built and loaded in {time.time() - t:.0f} s')" 2>&1 \
  | tail -20 | tee "$out/cuda_build.log"
WAN_KERNELS_BUILD_DIR=$cuda_build timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels --ignore=tests/kernels/test_cuda_sources.py 2>&1 \
  | tail -25 | tee "$out/kernel_tests.log"
timeout 60 python3 -m benchmarks.gpu_pipelines --out-dir "$out" 2>&1 | grep -v -i warn | tee "$out/gpu_pipelines.log"
WAN_KERNELS_BUILD_DIR=$cuda_build timeout 300 python3 -m benchmarks.bench_kernels --compile-budget-s 60 --out-dir "$out" 2>&1 | grep -v -i warn \
  | tee "$out/bench_kernels.log"
if [ "${BENCH_DIT:-0}" = 1 ]; then
  timeout 300 python3 -m benchmarks.bench_dit --gpu --layers 2 --out-dir "$out" 2>&1 | grep -v -i warn \
    | tee "$out/bench_dit.log"
fi
if [ "${BENCH_CACHE:-0}" = 1 ]; then
  timeout 240 python3 -m benchmarks.bench_cache --gpu --layers 4 --out-dir "$out" 2>&1 | grep -v -i warn \
    | tee "$out/bench_cache.log"
fi
