"""Triton ``gated_residual``: ``x + y * gate`` in float32, stored in ``x``'s dtype, one block of a
token's channels per program (geometry from ``launch.block_config``)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.checks import fail
from wan_kernels.dispatch import register
from wan_kernels.triton.launch import block_config, row_strides
from wan_kernels.triton.rounding import cast

# CUDA's limits on a grid's first dimension (a sample's blocks) and its second (the samples).
MAX_GRID_X, MAX_GRID_Y = 2**31 - 1, 65535


@triton.jit
def _gated_residual_kernel(
    x_ptr, y_ptr, gate_ptr, out_ptr, L, C, blocks_per_row,
    x_sb, x_sl, y_sb, y_sl, gate_sb, gate_sl,
    BLOCK: tl.constexpr,
):
    # Consecutive programs take consecutive blocks of a row, then of the next row, so the programs
    # running together stream one stretch of memory. Token-major order (consecutive programs on
    # consecutive tokens, a row apart) reached 0.96-0.99 of copy bandwidth on an H100, this order
    # 1.00-1.02 (benchmarks/results/2026-11-26_NVIDIA-H100-80GB-HBM3_s15_gated_residual_order.json).
    program = tl.program_id(0)
    t = (program // blocks_per_row).to(tl.int64)
    cols = (program % blocks_per_row) * BLOCK + tl.arange(0, BLOCK)
    b = tl.program_id(1).to(tl.int64)
    mask = cols < C
    x = tl.load(x_ptr + b * x_sb + t * x_sl + cols, mask=mask).to(tl.float32)
    y = tl.load(y_ptr + b * y_sb + t * y_sl + cols, mask=mask).to(tl.float32)
    gate = tl.load(gate_ptr + b * gate_sb + t * gate_sl + cols, mask=mask)
    tl.store(out_ptr + (b * L + t) * C + cols, cast(x + y * gate, out_ptr.dtype.element_ty), mask=mask)


def launch_into(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, out: torch.Tensor) -> None:
    """Launch ``_gated_residual_kernel`` over [B, L, C], writing the dense ``out`` (benchmarks place
    ``out`` themselves through this)."""
    batch, length, width = x.shape
    config = block_config("gated_residual")
    blocks_per_row = triton.cdiv(width, config.block)
    grid = (length * blocks_per_row, batch)
    if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_Y:
        fail("gated_residual", f"the triton backend launches at most {MAX_GRID_X} blocks of "
             f"{config.block} channels a sample and {MAX_GRID_Y} samples, got {batch} samples of "
             f"{length} x {width}: use another backend (wan_kernels.set_backend)")
    _gated_residual_kernel[grid](
        x, y, gate, out, length, width, blocks_per_row, *row_strides(x), *row_strides(y),
        *row_strides(gate), BLOCK=config.block, num_warps=config.warps,
    )


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + y * gate`` over [B, L, C] in a new tensor of ``x``'s dtype."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if out.numel():
        launch_into(x, y, gate, out)
    return out


register("triton", "gated_residual")(gated_residual)
