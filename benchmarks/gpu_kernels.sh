#!/usr/bin/env bash
# One lent-GPU check of wan_kernels: the kernel tests on the GPU (real Triton, not the interpreter),
# then bench_kernels at the DiT's shapes. Run from the repository root; output files go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -15 | tee "$out/kernel_tests.log"
timeout 300 python3 -m benchmarks.bench_kernels --out-dir "$out" 2>&1 | grep -v -i warn | tee "$out/bench_kernels.log"
