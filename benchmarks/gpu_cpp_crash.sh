#!/usr/bin/env bash
# GPU-machine diagnosis of the wan_kernels_cpp segfault (test_native_checks, first bad case).
# Seen on 2026-11-26 on an H100 image (torch 2.11): the first bad-argument call of a just-in-time
# built wan_kernels_cpp crashed the process instead of raising, not reproduced on a CPU machine with
# torch 2.11. Run from the repository root with $OUT set (device tool), about 1-3 minutes
# (timeout_s=420), if benchmarks/gpu_session.sh shows it again: a fresh process with the cpp
# extension alone and after the cuda one, the test file alone, the symbol bindings and notes of
# the .so, and the C stack of a crash (the image has cuda-gdb, no gdb).
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONFAULTHANDLER=1
export WAN_KERNELS_BUILD_DIR=${WAN_KERNELS_BUILD_DIR:-/tmp/wan_kernels_cuda_build}
{ g++ --version | head -1; ldd --version | head -1; uname -r
  python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__)"; } 2>&1 | tee "$out/env.txt"
cat > /tmp/r.py <<'EOF'
import sys, torch
from wan_kernels import native
for name in sys.argv[1:]:
    assert native.load(native.CUDA if name == "cuda" else native.CPP), name
    print("loaded", name, flush=True)
ops = torch.ops.wan_kernels_cpp
g = lambda s: torch.randn(s, generator=torch.Generator().manual_seed(0))
print(ops.layernorm_modulate(g((2, 3, 8)), g((2, 1, 8)), g((2, 1, 8)), 1e-6, True, torch.float32).shape, flush=True)
try:
    ops.layernorm_modulate(g((2, 3, 4)), g((2, 1, 8)), g((2, 1, 8)), 1e-6, True, torch.float32)
except RuntimeError as e:
    print("raised:", str(e).splitlines()[0], flush=True)
EOF
# 1. the bad call alone in a fresh process: cpp only, then with the cuda extension loaded first
for order in "cpp" "cuda cpp"; do echo "== $order"; timeout 240 python3 /tmp/r.py $order 2>&1 | tail -15; echo "rc=${PIPESTATUS[0]}"; done
# 2. the test file alone in a fresh process
timeout 120 python3 -m pytest -q -p no:cacheprovider -x tests/kernels/test_native_checks.py 2>&1 | tail -5
# 3. where the .so's symbols bind, and its notes (CET etc.)
so=$WAN_KERNELS_BUILD_DIR/wan_kernels_cpp/wan_kernels_cpp.so
LD_DEBUG=bindings LD_DEBUG_OUTPUT=/tmp/ldb timeout 120 python3 /tmp/r.py cuda cpp >/dev/null 2>&1
cat /tmp/ldb.* | grep "binding file $so" | grep -v "to $so" | sed -E 's/.* to ([^ ]+) .*symbol `([^'"'"']+).*/\1 \2/' > "$out/cpp_bindings.txt"
{ ldd "$so"; readelf -n "$so"; readelf -d "$so" | grep -E "NEEDED|FLAGS"; } > "$out/cpp_so.txt" 2>&1
# 4. the C stack of a crash (the image has cuda-gdb, no gdb); only useful if 1. crashed
timeout 150 cuda-gdb -q -batch -ex run -ex bt -ex "info sharedlibrary" --args python3 /tmp/r.py cuda cpp > "$out/cuda_gdb.txt" 2>&1
grep -A30 "SIGSEGV" "$out/cuda_gdb.txt" | head -40
