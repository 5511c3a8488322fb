#!/usr/bin/env bash
# One lent-GPU session: environment facts, the test suite, then the DiT benchmark at real widths.
# Run from the repository root on the device machine with the wheels of wan22, diffusers and
# importlib_metadata in .whl/ (see benchmarks/README.md). Output files go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -3
python3 -m benchmarks.bench_dit --gpu --layers 2 --out-dir "$out" 2>&1 | grep -v -i warn | tee "$out/bench_dit.log"
