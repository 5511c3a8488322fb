#!/usr/bin/env bash
# One lent-GPU session, every GPU-only check in one call, inside one time budget.
#
# A session has 15 minutes of device time in all, the machine's start (1-2 minutes) included, and one
# command may run 10 minutes: run this once with the device tool's timeout_s=600; it keeps within
# BUDGET_S seconds (default 540) by giving each step at most what is left, in priority order, and
# skipping a step when less than its minimum is left:
#   1. build the cuda backend with the image's nvcc (its compile check is this build), and the
#      cpp backend, so that the test workers find both built
#   2. the kernel tests on the GPU: the cuda backend's cases, the compiled ops' own checks and the
#      CUDA graph tests
#   3. bench_kernels (#7, the open issue): every op on triton and cuda, the Triton geometry sweep
#      of the two sweep shapes after their op rows, then whole blocks, starting nothing new past
#      its deadline and saving after each part
#   4. bench_graphs --gpu: DiT blocks replayed from CUDA graphs against eager ones (time, memory),
#      720p at the A14B width first (never run on a GPU before)
#   5. gpu_pipelines: the pipelines end to end on CUDA, with CUDA graphs too
#   6. bench_streaming --gpu: streamed DiT blocks against resident ones at the A14B width (time
#      and peak memory)
#   7. bench_fp8 --gpu --compile: float8 DiT weights against bfloat16 ones at real widths (time,
#      eager and compiled, memory and error)
#   8. bench_vae --gpu: the VAEs' decode at 720p, 81 frames, whole frames against 512- and
#      256-pixel tiles (time, peak memory, distance), and i2v-A14B's encode
#   9. the rest of the kernel tests (torch and real Triton, which earlier sessions ran on GPUs),
#      and the split and sharded DiT in one NCCL process
#   10. bench_dit --gpu --compile: the DiT against the official one at real widths (S2V included),
#       and with its blocks compiled (saved after each case)
#   11. bench_cache --gpu: the step cache at the ti2v-5B width
# The never-run checks (4-8) come right after the open issue's; 9-11 have run on GPUs before.
# Each benchmark saves its rows after each case, and a case that fails costs its row alone.
# Run from the repository root on the device machine with the wheels listed in benchmarks/README.md
# in .whl/. Everything goes to $OUT: one session.log and each benchmark's JSON, packed into
# results.tgz when the session ends with more than 7 (the device tool brings back at most 8 files). Step names given as arguments run only those steps (in the order
# above), e.g. `bash benchmarks/gpu_session.sh bench_dit gpu_pipelines` for a second, shorter call.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
budget=${BUDGET_S:-540}
mkdir -p "$out"
log="$out/session.log"
start=$SECONDS
steps=" cuda_build kernel_tests bench_kernels bench_graphs gpu_pipelines bench_streaming bench_fp8 bench_vae bench_dit bench_cache "
for name in "$@"; do
  if [[ "$steps" != *" $name "* ]]; then
    echo "unknown step '$name'; the steps are:$steps" >&2
    exit 2
  fi
done
wanted=" $* "
# The steps that use the cuda backend need its build first, in its own step's time.
if [[ "$wanted" == *" kernel_tests "* || "$wanted" == *" bench_kernels "* ]]; then
  wanted="$wanted cuda_build "
fi

left() { echo $((budget - (SECONDS - start))); }

# step NAME MAX_S MIN_S COMMAND...: run COMMAND for at most MAX_S seconds and at most what is left;
# at the limit it gets SIGINT (pytest then prints its summary of what ran), 20 s later SIGKILL.
step() {
  local name=$1 max=$2 min=$3 remaining limit rc
  shift 3
  if [ "$wanted" != "  " ] && [[ "$wanted" != *" $name "* ]]; then
    return
  fi
  remaining=$(left)
  if [ "$remaining" -lt "$min" ]; then
    echo "== $name: skipped, ${remaining} s left of ${budget}" | tee -a "$log"
    return
  fi
  limit=$((remaining < max ? remaining : max))
  echo "== $name: up to ${limit} s ($(date +%T))" | tee -a "$log"
  timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  echo "== $name: exit ${rc} after $((SECONDS - start)) s" | tee -a "$log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
torch.cuda.get_device_name())" | tee -a "$log"

# The cuda backend goes to its own build folder, which only the steps that mean to use it name:
# elsewhere (bench_cache, bench_dit, the pipelines) auto finds no cuda build and stays on triton.
cuda_build=/tmp/wan_kernels_cuda_build
step cuda_build 200 60 env WAN_KERNELS_BUILD_DIR=$cuda_build python3 -c "import time, wan_kernels
for name in ('cuda', 'cpp'):
    t = time.time(); wan_kernels.set_backend(name); print(f'{name} backend built and loaded in {time.time() - t:.0f} s')"
# A build stopped at its limit leaves torch's build lock behind, on which the next load would wait
# forever; without it the next load goes on with the build where ninja left it.
find "$cuda_build" -name lock -delete 2>/dev/null
# The nvcc compile check is the build above; the CMake build (which would compile the CUDA sources
# a second time), the sm_90 resource check of the Triton kernels and bench_dit's CPU test are CPU
# checks, run by CI. The tests run in pytest-xdist workers where the image has it (its package
# list in the device tool's KINDS.md names pytest-xdist): a test that crashes its process (a
# segfault in a compiled op stopped the whole step on 2026-11-26; the cause, a static C++ runtime,
# is in benchmarks/results/2026-11-26_NVIDIA-H100-80GB-HBM3_s14_cpp_crash.txt) then fails alone
# and a new worker runs the rest.
# test_bench_cpu times the CPU extension on the host, as CI does. One Inductor compile thread a
# worker: eight workers already keep the cores busy.
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
kernel_tests=(env WAN_KERNELS_BUILD_DIR=$cuda_build TORCHINDUCTOR_COMPILE_THREADS=1 python3 -m pytest -q
  -p no:cacheprovider $workers tests/kernels tests/benchmarks tests/distributed/test_one_gpu_process.py
  tests/lora/test_lora_devices.py tests/models/test_block_streaming.py tests/models/test_fp8_weights.py
  tests/models/test_pinned_chunks.py tests/pipelines/test_memory_plan.py tests/pipelines/test_offload.py
  tests/pipelines/test_host_memory.py tests/models/test_cuda_graphs.py
  --ignore=tests/kernels/test_cuda_sources.py
  --ignore=tests/kernels/test_cmake_build.py --ignore=tests/kernels/test_bench_cpu.py
  --ignore=tests/benchmarks/test_bench_dit.py
  --deselect tests/benchmarks/test_gpu_tools.py::test_compiled_kernels_at_the_widest_real_shape
  --maxfail=25 --no-header -rfE --durations=10)
step kernel_tests 110 40 "${kernel_tests[@]}" -k "cuda or native"
# Its own deadline 25 s inside the step's limit, so that it stops and saves rather than being killed.
kernels_limit=$(( $(left) < 200 ? $(left) : 200 ))
step bench_kernels 200 90 env WAN_KERNELS_BUILD_DIR=$cuda_build python3 -m benchmarks.bench_kernels \
  --compile-budget-s 100 --sweep --sweep-budget-s 45 --deadline-s $((kernels_limit - 25)) --out-dir "$out"
step bench_graphs 120 50 python3 -m benchmarks.bench_graphs --gpu --out-dir "$out"
step gpu_pipelines 120 30 python3 -m benchmarks.gpu_pipelines --out-dir "$out"
step bench_streaming 60 30 python3 -m benchmarks.bench_streaming --gpu --out-dir "$out"
step bench_fp8 120 45 python3 -m benchmarks.bench_fp8 --gpu --compile --out-dir "$out"
step bench_vae 150 60 python3 -m benchmarks.bench_vae --gpu --out-dir "$out"
step kernel_tests 200 40 "${kernel_tests[@]}" -k "not (cuda or native)"
step bench_dit 150 60 python3 -m benchmarks.bench_dit --gpu --layers 2 --compile --out-dir "$out"
# 30 generations of 10 steps at 18,480 tokens (an estimated 2-3 s each on an H100): one untimed
# round for the quality columns (saved first), two timed rounds.
step bench_cache 150 90 python3 -m benchmarks.bench_cache --gpu --layers 4 --repeat 2 --out-dir "$out"
echo "session done in $((SECONDS - start)) s of ${budget}" | tee -a "$log"
shopt -s nullglob
results=("$out"/*.json)
if [ "${#results[@]}" -gt 7 ]; then
  tar czf "$out/results.tgz" -C "$out" "${results[@]##*/}" && rm -f "${results[@]}"
  echo "packed ${#results[@]} result files into results.tgz" | tee -a "$log"
fi
