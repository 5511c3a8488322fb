"""Triton ``layernorm_modulate`` and ``gated_residual_layernorm_modulate``: one token per program.

Both run one kernel; with ``GATED`` it first forms and stores the new residual ``x + y * gate`` and
normalises that, so the residual stream is read once for both.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.launch import row_block, row_strides
from wan_kernels.triton.rounding import cast, round_through


@triton.jit
def _layernorm_modulate_kernel(
    x_ptr, y_ptr, gate_ptr, shift_ptr, scale_ptr, residual_ptr, out_ptr, L, C, eps,
    x_sb, x_sl, y_sb, y_sl, gate_sb, gate_sl, shift_sb, shift_sl, scale_sb, scale_sl,
    BLOCK: tl.constexpr, GATED: tl.constexpr, ROUND: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // L
    t = row % L
    cols = tl.arange(0, BLOCK)
    mask = cols < C
    h = tl.load(x_ptr + b * x_sb + t * x_sl + cols, mask=mask, other=0.0).to(tl.float32)
    if GATED:
        y = tl.load(y_ptr + b * y_sb + t * y_sl + cols, mask=mask, other=0.0).to(tl.float32)
        gate = tl.load(gate_ptr + b * gate_sb + t * gate_sl + cols, mask=mask, other=0.0)
        h = h + y * gate
        tl.store(residual_ptr + row * C + cols, h, mask=mask)
    mean = tl.sum(h, axis=0) / C
    centred = tl.where(mask, h - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / C
    normed = centred * tl.rsqrt(var + eps)
    if ROUND:
        # The official model rounds the normalised value to the input's dtype before modulating.
        normed = round_through(normed, x_ptr.dtype.element_ty)
    shift = tl.load(shift_ptr + b * shift_sb + t * shift_sl + cols, mask=mask)
    scale = tl.load(scale_ptr + b * scale_sb + t * scale_sl + cols, mask=mask)
    out = normed * (1.0 + scale) + shift
    tl.store(out_ptr + row * C + cols, cast(out, out_ptr.dtype.element_ty), mask=mask)


def _launch(
    op: str, x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, shift: torch.Tensor,
    scale: torch.Tensor, eps: float, round_to_input: bool, out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, length, width = x.shape
    block, warps = row_block(op, width)
    out = torch.empty((batch, length, width), dtype=out_dtype, device=x.device)
    gated = y is not None
    residual = torch.empty((batch, length, width), dtype=torch.float32, device=x.device) if gated else out
    y, gate = (y, gate) if gated else (x, x)
    if out.numel():
        _layernorm_modulate_kernel[(batch * length,)](
            x, y, gate, shift, scale, residual, out, length, width, eps,
            *row_strides(x), *row_strides(y), *row_strides(gate), *row_strides(shift), *row_strides(scale),
            BLOCK=block, GATED=gated, ROUND=round_to_input, num_warps=warps,
        )
    return residual, out


def layernorm_modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, round_to_input: bool,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """LayerNorm of ``x`` [B, L, C] modulated by ``shift``/``scale``."""
    return _launch("layernorm_modulate", x, None, None, shift, scale, eps, round_to_input, out_dtype)[1]


def gated_residual_layernorm_modulate(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
    eps: float, out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x + y * gate, layernorm_modulate(x + y * gate, shift, scale, eps))``."""
    # The residual is float32, so rounding the normalised value to its dtype is a no-op: skip it.
    return _launch("gated_residual_layernorm_modulate", x, y, gate, shift, scale, eps, False, out_dtype)


register("triton", "layernorm_modulate")(layernorm_modulate)
register("triton", "gated_residual_layernorm_modulate")(gated_residual_layernorm_modulate)
