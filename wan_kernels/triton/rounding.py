"""Casts from float32 with round-to-nearest-even, bit-identical to torch's ``.to(dtype)``.

Triton's CPU interpreter truncates float32 to bfloat16 where the GPU rounds to nearest; rounding
the bits here first makes the final cast exact on both, so the interpreter tests exercise the
arithmetic the GPU runs.
"""

import triton
import triton.language as tl


@triton.jit
def cast(x, dtype: tl.constexpr):
    """float32 ``x`` as ``dtype``, rounded to nearest even (NaN stays NaN)."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = tl.where(x == x, rounded.to(tl.float32, bitcast=True), x)
    return x.to(dtype)


@triton.jit
def round_through(x, dtype: tl.constexpr):
    """float32 ``x`` rounded to ``dtype`` and back to float32."""
    return cast(x, dtype).to(tl.float32)
