"""Index helpers of the row kernels, whose programs take tiles of ``TOKENS`` tokens."""

import triton
import triton.language as tl


@triton.jit
def token_tile(tile, N, L, TOKENS: tl.constexpr):
    """The tokens of tile ``tile`` of the N = B * L rows of a [B, L, C] input: their row indices,
    which of them exist (the last tile may run past N), and their batch and token indices."""
    rows = tl.cast(tile, tl.int64) * TOKENS + tl.arange(0, TOKENS)
    return rows, rows < N, rows // L, rows % L


@triton.jit
def tile_mask(row_mask, cols, C):
    """The [TOKENS, BLOCK] mask of existing rows and channels ``cols`` below ``C``."""
    return row_mask[:, None] & (cols < C)[None, :]
