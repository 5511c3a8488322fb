"""Triton ``rel_l1`` and ``rel_l2``: per-token partial sums, then one program reduces and divides.

Two launches and no host synchronisation; the reduction order is fixed, so results are
deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.launch import as_rows

_ROW_BLOCK = 1024
_FINISH_BLOCK = 1024


@triton.jit
def _partial_sums_kernel(
    a_ptr, b_ptr, partial_ptr, L_sampled, C, stride, a_sn, a_sl, b_sn, b_sl,
    SQUARE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    n = row // L_sampled
    t = (row % L_sampled) * stride
    num = tl.zeros([BLOCK], dtype=tl.float32)
    den = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, C, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < C
        a = tl.load(a_ptr + n * a_sn + t * a_sl + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + n * b_sn + t * b_sl + cols, mask=mask, other=0.0).to(tl.float32)
        if SQUARE:
            num += (a - b) * (a - b)
            den += b * b
        else:
            num += tl.abs(a - b)
            den += tl.abs(b)
    tl.store(partial_ptr + 2 * row, tl.sum(num, axis=0))
    tl.store(partial_ptr + 2 * row + 1, tl.sum(den, axis=0))


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


def _relative_error(a: torch.Tensor, b: torch.Tensor, stride: int, square: bool) -> torch.Tensor:
    a3, b3 = as_rows(a), as_rows(b)
    count, length, width = a3.shape
    sampled = triton.cdiv(length, stride)
    rows = count * sampled
    partials = torch.empty((max(rows, 1), 2), dtype=torch.float32, device=a.device)
    out = torch.empty((), dtype=torch.float32, device=a.device)
    block = min(triton.next_power_of_2(max(width, 1)), _ROW_BLOCK)
    if rows:
        _partial_sums_kernel[(rows,)](
            a3, b3, partials, sampled, width, stride, a3.stride(0), a3.stride(1), b3.stride(0), b3.stride(1),
            SQUARE=square, BLOCK=block, num_warps=4,
        )
    _finish_kernel[(1,)](partials, out, rows, SQUARE=square, BLOCK=_FINISH_BLOCK, num_warps=4)
    return out


def rel_l1(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    """``sum|a - b| / sum|b|`` over every ``stride``-th token."""
    return _relative_error(a, b, stride, square=False)


def rel_l2(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    """``|a - b|_2 / |b|_2`` over every ``stride``-th token."""
    return _relative_error(a, b, stride, square=True)


register("triton", "rel_l1")(rel_l1)
register("triton", "rel_l2")(rel_l2)
