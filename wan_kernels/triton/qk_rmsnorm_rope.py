"""Triton ``qk_rmsnorm_rope``: RMSNorm over a token's full width and the interleaved rotary
embedding of its heads, one token per program, one launch for queries and one for keys."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.launch import row_block, row_strides
from wan_kernels.triton.rounding import cast, round_through


@triton.jit
def _rmsnorm_rope_kernel(
    x_ptr, weight_ptr, cos_ptr, sin_ptr, out_ptr, L, C, HALF_D, eps, x_sb, x_sl,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // L
    t = row % L
    cols = tl.arange(0, BLOCK)
    mask = cols < C
    x = tl.load(x_ptr + b * x_sb + t * x_sl + cols, mask=mask, other=0.0).to(tl.float32)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    normed = x * tl.rsqrt(tl.sum(x * x, axis=0) / C + eps)
    # As reference.rms_norm: the normalised value is rounded to the input dtype before the weight.
    normed = round_through(normed, x_ptr.dtype.element_ty) * weight
    even, odd = tl.split(tl.reshape(normed, [BLOCK // 2, 2]))
    pairs = tl.arange(0, BLOCK // 2)
    pair_mask = pairs < C // 2
    table = t * HALF_D + pairs % HALF_D
    cos = tl.load(cos_ptr + table, mask=pair_mask, other=0.0)
    sin = tl.load(sin_ptr + table, mask=pair_mask, other=0.0)
    rotated = tl.reshape(tl.join(even * cos - odd * sin, even * sin + odd * cos), [BLOCK])
    tl.store(out_ptr + row * C + cols, cast(rotated, out_ptr.dtype.element_ty), mask=mask)


def _launch(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int,
            eps: float) -> torch.Tensor:
    batch, length, width = x.shape
    block, warps = row_block("qk_rmsnorm_rope", width)
    out = torch.empty((batch, length, num_heads, width // num_heads), dtype=x.dtype, device=x.device)
    if out.numel():
        _rmsnorm_rope_kernel[(batch * length,)](
            x, weight, cos, sin, out, length, width, width // num_heads // 2, eps, *row_strides(x),
            BLOCK=max(block, 2), num_warps=warps,
        )
    return out


def qk_rmsnorm_rope(
    q: torch.Tensor, k: torch.Tensor, weight_q: torch.Tensor, weight_k: torch.Tensor, cos: torch.Tensor,
    sin: torch.Tensor, num_heads: int, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised and rotated ``q`` and ``k``, each [B, L, num_heads, D] in the input dtype."""
    return _launch(q, weight_q, cos, sin, num_heads, eps), _launch(k, weight_k, cos, sin, num_heads, eps)


register("triton", "qk_rmsnorm_rope")(qk_rmsnorm_rope)
