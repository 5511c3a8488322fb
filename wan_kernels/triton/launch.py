"""Launch geometry shared by the Triton launchers."""

from __future__ import annotations

import math

import torch
import triton

from wan_kernels.checks import fail

# Row kernels keep a whole row in registers; beyond this width they would spill.
MAX_ROW_WIDTH = 16384
# Elements per program of the elementwise kernels.
ELEMENTWISE_BLOCK = 1024


def row_block(op: str, width: int) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` for a kernel holding one row of ``width`` elements per program."""
    if width > MAX_ROW_WIDTH:
        fail(op, f"the triton backend supports rows of at most {MAX_ROW_WIDTH} channels, got {width}")
    block = triton.next_power_of_2(width)
    return block, max(1, min(16, block // 512))


def row_strides(t: torch.Tensor) -> tuple[int, int]:
    """Element strides of ``t``'s batch and token dims ([B, L, C]); 0 for a broadcast token dim."""
    return t.stride(0), t.stride(1) if t.shape[1] > 1 else 0


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as [N, L, C]: its leading dims flattened into one (a view when its strides allow); N
    counted rather than inferred, which an empty ``t`` would leave ambiguous."""
    return t.reshape(math.prod(t.shape[:-2]), *t.shape[-2:])
