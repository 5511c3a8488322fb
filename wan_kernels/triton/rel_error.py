"""Triton ``rel_l1`` and ``rel_l2``: partial sums over a tile of tokens per program (geometry from
``launch.row_config``), then one program reduces them and divides.

Two launches and no host synchronisation; the reduction order is fixed, so results are
deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.launch import as_rows, row_config
from wan_kernels.triton.tiles import tile_mask, token_tile

_FINISH_BLOCK = 1024


@triton.jit
def _partial_sums_kernel(
    a_ptr, b_ptr, partial_ptr, rows, L_sampled, C, stride, a_sn, a_sl, b_sn, b_sl,
    SQUARE: tl.constexpr, TOKENS: tl.constexpr, BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    _, row_mask, n, sample = token_tile(rows, L_sampled, TOKENS)
    t = sample * stride
    a_rows, b_rows = n * a_sn + t * a_sl, n * b_sn + t * b_sl
    num = tl.zeros([TOKENS, BLOCK], dtype=tl.float32)
    den = tl.zeros([TOKENS, BLOCK], dtype=tl.float32)
    for start in range(0, C, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = tile_mask(row_mask, cols, C)
        a = tl.load(a_ptr + a_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + b_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if SQUARE:
            num += (a - b) * (a - b)
            den += b * b
        else:
            num += tl.abs(a - b)
            den += tl.abs(b)
    tl.store(partial_ptr + 2 * program, tl.sum(tl.sum(num, axis=1), axis=0))
    tl.store(partial_ptr + 2 * program + 1, tl.sum(tl.sum(den, axis=1), axis=0))


@triton.jit
def _finish_kernel(partial_ptr, out_ptr, rows, SQUARE: tl.constexpr, BLOCK: tl.constexpr):
    num = tl.zeros([BLOCK], dtype=tl.float32)
    den = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, rows, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < rows
        num += tl.load(partial_ptr + 2 * idx, mask=mask, other=0.0)
        den += tl.load(partial_ptr + 2 * idx + 1, mask=mask, other=0.0)
    ratio = tl.sum(num, axis=0) / tl.sum(den, axis=0)
    tl.store(out_ptr, tl.sqrt(ratio) if SQUARE else ratio)


def _relative_error(op: str, a: torch.Tensor, b: torch.Tensor, stride: int, square: bool) -> torch.Tensor:
    a3, b3 = as_rows(a), as_rows(b)
    count, length, width = a3.shape
    sampled = triton.cdiv(length, stride)
    rows = count * sampled
    config = row_config(op, width)
    programs = triton.cdiv(rows, config.tokens)
    partials = torch.empty((max(programs, 1), 2), dtype=torch.float32, device=a.device)
    out = torch.empty((), dtype=torch.float32, device=a.device)
    if programs:
        _partial_sums_kernel[(programs,)](
            a3, b3, partials, rows, sampled, width, stride, a3.stride(0), a3.stride(1), b3.stride(0),
            b3.stride(1), SQUARE=square, TOKENS=config.tokens, BLOCK=config.block(op, width),
            num_warps=config.warps,
        )
    _finish_kernel[(1,)](partials, out, programs, SQUARE=square, BLOCK=_FINISH_BLOCK, num_warps=4)
    return out


def rel_l1(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    """``sum|a - b| / sum|b|`` over every ``stride``-th token."""
    return _relative_error("rel_l1", a, b, stride, square=False)


def rel_l2(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    """``|a - b|_2 / |b|_2`` over every ``stride``-th token."""
    return _relative_error("rel_l2", a, b, stride, square=True)


register("triton", "rel_l1")(rel_l1)
register("triton", "rel_l2")(rel_l2)
