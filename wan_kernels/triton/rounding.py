"""Casts from float32 with round-to-nearest-even, bit-identical to torch's ``.to(dtype)``.

Triton's CPU interpreter truncates float32 to bfloat16 where the GPU rounds to nearest; there the
bits are rounded first, so the final cast is exact and the interpreter tests exercise the
arithmetic the GPU runs. The GPU's own conversion already rounds to nearest even in one
instruction; rounding the bits there as well had ``qk_rmsnorm_rope`` (bf16 out, little other
work an element) at 0.88-0.91 of copy bandwidth on an H100, the conversion alone at 0.92-0.97
(two runs of ``benchmarks.bench_kernels``, benchmarks/results/2026-11-26_NVIDIA-H100-80GB-HBM3_s15_*).
"""

import triton
import triton.language as tl

from wan_kernels.dispatch import triton_interpreted

# Read once, at import: Triton too reads TRITON_INTERPRET once, as it decorates the kernels.
ROUND_BF16_BITS: tl.constexpr = tl.constexpr(triton_interpreted())


@triton.jit
def cast(x, dtype: tl.constexpr):
    """float32 ``x`` as ``dtype``, rounded to nearest even (NaN stays NaN)."""
    if ROUND_BF16_BITS and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = tl.where(x == x, rounded.to(tl.float32, bitcast=True), x)
    return x.to(dtype)


@triton.jit
def round_through(x, dtype: tl.constexpr):
    """float32 ``x`` rounded to ``dtype`` and back to float32."""
    return cast(x, dtype).to(tl.float32)
