"""Triton ``gated_residual``: ``x + y * gate`` in float32, stored in ``x``'s dtype, one block of a
token's channels per program (geometry from ``launch.block_config``)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.launch import block_config, row_strides
from wan_kernels.triton.rounding import cast


@triton.jit
def _gated_residual_kernel(
    x_ptr, y_ptr, gate_ptr, out_ptr, L, C,
    x_sb, x_sl, y_sb, y_sl, gate_sb, gate_sl,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // L
    t = row % L
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < C
    x = tl.load(x_ptr + b * x_sb + t * x_sl + cols, mask=mask).to(tl.float32)
    y = tl.load(y_ptr + b * y_sb + t * y_sl + cols, mask=mask).to(tl.float32)
    gate = tl.load(gate_ptr + b * gate_sb + t * gate_sl + cols, mask=mask)
    tl.store(out_ptr + row * C + cols, cast(x + y * gate, out_ptr.dtype.element_ty), mask=mask)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Launch ``_gated_residual_kernel`` over [B, L, C]."""
    batch, length, width = x.shape
    out = torch.empty((batch, length, width), dtype=x.dtype, device=x.device)
    if out.numel():
        config = block_config("gated_residual")
        grid = (batch * length, triton.cdiv(width, config.block))
        _gated_residual_kernel[grid](
            x, y, gate, out, length, width, *row_strides(x), *row_strides(y), *row_strides(gate),
            BLOCK=config.block, num_warps=config.warps,
        )
    return out


register("triton", "gated_residual")(gated_residual)
