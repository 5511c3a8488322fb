"""Triton ``qk_rmsnorm_rope``: RMSNorm over a token's full width and the interleaved rotary
embedding of its heads, a tile of tokens per program (geometry from ``launch.row_config``), one
launch for queries and one for keys.

A row held whole (in one tile or two) is read once; a chunked row is read twice (sum of squares,
then normalise, rotate and store), the second time from L1/L2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.launch import row_config, row_strides
from wan_kernels.triton.rounding import cast, round_through
from wan_kernels.triton.tiles import tile_mask, token_tile


@triton.jit
def _normalise_rotate_store(x, rstd, weight_ptr, cos_ptr, sin_ptr, out_ptr, x_ptr, t, out_rows, row_mask,
                            start, C, HALF_D, TOKENS: tl.constexpr, BLOCK: tl.constexpr):
    """``x`` [TOKENS, BLOCK] (channels ``start`` on) normalised by ``rstd``, weighted, rotated and stored."""
    cols = start + tl.arange(0, BLOCK)
    mask = tile_mask(row_mask, cols, C)
    # Loaded as a [1, BLOCK] tile, in the layout of x: a [BLOCK] vector would come in another
    # layout and go through shared memory to meet it.
    weight = tl.load(weight_ptr + cols[None, :], mask=(cols < C)[None, :], other=0.0)
    # As reference.rms_norm: the normalised value is rounded to the input dtype before the weight.
    normed = round_through(x * rstd[:, None], x_ptr.dtype.element_ty) * weight
    even, odd = tl.split(tl.reshape(normed, [TOKENS, BLOCK // 2, 2]))
    pairs = start // 2 + tl.arange(0, BLOCK // 2)
    pair_mask = tile_mask(row_mask, pairs, C // 2)
    table = t[:, None] * HALF_D + (pairs % HALF_D)[None, :]
    cos = tl.load(cos_ptr + table, mask=pair_mask, other=0.0)
    sin = tl.load(sin_ptr + table, mask=pair_mask, other=0.0)
    rotated = tl.reshape(tl.join(even * cos - odd * sin, even * sin + odd * cos), [TOKENS, BLOCK])
    tl.store(out_ptr + out_rows[:, None] + cols[None, :], cast(rotated, out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_tile(x_ptr, x_rows, row_mask, start, C, BLOCK: tl.constexpr):
    """The float32 [TOKENS, BLOCK] tile of ``x`` at channels ``start`` on (0 where masked)."""
    cols = start + tl.arange(0, BLOCK)
    return tl.load(x_ptr + x_rows[:, None] + cols[None, :], mask=tile_mask(row_mask, cols, C),
                   other=0.0).to(tl.float32)


@triton.jit
def _rmsnorm_rope_kernel(
    x_ptr, weight_ptr, cos_ptr, sin_ptr, out_ptr, N, L, C, HALF_D, eps, x_sb, x_sl,
    TOKENS: tl.constexpr, BLOCK: tl.constexpr, TAIL: tl.constexpr, CHUNKED: tl.constexpr,
    STAGES: tl.constexpr,
):
    rows, row_mask, b, t = token_tile(tl.program_id(0), N, L, TOKENS)
    x_rows, out_rows = b * x_sb + t * x_sl, rows * C
    if CHUNKED:
        squares = tl.zeros([TOKENS, BLOCK], dtype=tl.float32)
        for start in tl.range(0, C, BLOCK, num_stages=STAGES):
            x = _load_tile(x_ptr, x_rows, row_mask, start, C, BLOCK)
            squares += x * x
        rstd = tl.rsqrt(tl.sum(squares, axis=1) / C + eps)
        for start in tl.range(0, C, BLOCK, num_stages=STAGES):
            x = _load_tile(x_ptr, x_rows, row_mask, start, C, BLOCK)
            _normalise_rotate_store(x, rstd, weight_ptr, cos_ptr, sin_ptr, out_ptr, x_ptr, t, out_rows,
                                    row_mask, start, C, HALF_D, TOKENS, BLOCK)
    else:
        x = _load_tile(x_ptr, x_rows, row_mask, 0, C, BLOCK)
        if TAIL:  # loaded before the first reduction, so a program has its whole row in flight
            x_tail = _load_tile(x_ptr, x_rows, row_mask, BLOCK, C, TAIL)
        squares = tl.sum(x * x, axis=1)
        if TAIL:
            squares += tl.sum(x_tail * x_tail, axis=1)
        rstd = tl.rsqrt(squares / C + eps)
        _normalise_rotate_store(x, rstd, weight_ptr, cos_ptr, sin_ptr, out_ptr, x_ptr, t, out_rows, row_mask,
                                0, C, HALF_D, TOKENS, BLOCK)
        if TAIL:
            _normalise_rotate_store(x_tail, rstd, weight_ptr, cos_ptr, sin_ptr, out_ptr, x_ptr, t, out_rows,
                                    row_mask, BLOCK, C, HALF_D, TOKENS, TAIL)


def _launch(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int,
            eps: float) -> torch.Tensor:
    op = "qk_rmsnorm_rope"
    batch, length, width = x.shape
    config = row_config(op, width)
    out = torch.empty((batch, length, num_heads, width // num_heads), dtype=x.dtype, device=x.device)
    if out.numel():
        rows = batch * length
        block, tail = config.tiles(op, width)
        _rmsnorm_rope_kernel[(triton.cdiv(rows, config.tokens),)](
            x, weight, cos, sin, out, rows, length, width, width // num_heads // 2, eps, *row_strides(x),
            TOKENS=config.tokens, BLOCK=block, TAIL=tail, CHUNKED=bool(config.chunk), STAGES=config.stages,
            num_warps=config.warps,
        )
    return out


def qk_rmsnorm_rope(
    q: torch.Tensor, k: torch.Tensor, weight_q: torch.Tensor, weight_k: torch.Tensor, cos: torch.Tensor,
    sin: torch.Tensor, num_heads: int, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised and rotated ``q`` and ``k``, each [B, L, num_heads, D] in the input dtype."""
    return _launch(q, weight_q, cos, sin, num_heads, eps), _launch(k, weight_k, cos, sin, num_heads, eps)


register("triton", "qk_rmsnorm_rope")(qk_rmsnorm_rope)
