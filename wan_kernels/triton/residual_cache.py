"""Triton ``residual_apply`` (``x + residual``) and ``residual_capture`` (``out - inp``), in float32."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.launch import block_config


@triton.jit
def _residual_kernel(a_ptr, b_ptr, out_ptr, n, SUBTRACT: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    a = tl.load(a_ptr + offsets, mask=mask).to(tl.float32)
    b = tl.load(b_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, a - b if SUBTRACT else a + b, mask=mask)


def _launch(op: str, a: torch.Tensor, b: torch.Tensor, subtract: bool) -> torch.Tensor:
    out = torch.empty(a.shape, dtype=torch.float32, device=a.device)
    if out.numel():
        config = block_config(op)
        grid = (triton.cdiv(out.numel(), config.block),)
        # Flat and dense: reshape alone may return a strided view (a size-1 last dim, a broadcast),
        # which the kernel's flat offsets would misread.
        a, b = a.contiguous().view(-1), b.contiguous().view(-1)
        _residual_kernel[grid](a, b, out, out.numel(), SUBTRACT=subtract, BLOCK=config.block,
                               num_warps=config.warps)
    return out


def residual_apply(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``x + residual`` in float32."""
    return _launch("residual_apply", x, residual, subtract=False)


def residual_capture(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """``out - inp`` in float32."""
    return _launch("residual_capture", out, inp, subtract=True)


register("triton", "residual_apply")(residual_apply)
register("triton", "residual_capture")(residual_capture)
