"""Triton ``layernorm_modulate`` and ``gated_residual_layernorm_modulate``: a tile of tokens per program.

Both run one kernel; with ``GATED`` it first forms and stores the new residual ``x + y * gate`` and
normalises that, so the residual stream is read once from memory for both.

A program handles ``RowConfig.tokens`` tokens (see ``launch.row_config``). By default a row up to
4096 channels is held whole in registers, a row up to 8192 whole in two tiles (C = 5120 as 4096 +
1024 lanes), and a wider one is walked in 1024-channel chunks, three times (mean, variance,
output). Every load of a whole row is issued before its first reduction, so a program has the
row's bytes in flight; how many programs an SM holds (registers) multiplies that. Measured on an
H100 with Triton 3.6 (``benchmarks/results/2026-11-26_NVIDIA-H100-80GB-HBM3_bench_kernels_sweep.json``;
registers as Triton 3.9 compiles for sm_90, from ``python -m benchmarks.kernel_resources``):

- C = 5120 padded to one 8192-lane tile wastes 37.5% of the registers: on 8 warps (57 registers a
  thread, 4 programs an SM) it reached 0.93 of copy bandwidth, on 16 warps 0.80. Split in two
  tiles on 4 warps (72 registers, 7 programs an SM) it reached 0.96. Fused with the residual
  update (three times the bytes of a row), split rows on 4 warps (91 registers, 5 programs) and
  whole rows on 8 (98 registers, 2 programs) tie at 0.98: the programs an SM holds do not tell
  the whole story.
- Walked in 1024-channel chunks, a program has one chunk (2 KB) in flight at a time: 0.70, and
  0.55 fused, though 12 programs fit an SM. ``RowConfig.stages`` pipelines the walk (the next
  chunks' loads in flight while one is summed); swept, not yet timed.
- C = 3072 per-token rows (4096 lanes on 8 warps, 30 KB of input a row with the modulation)
  reach 1.01.

The statistics are the same two-pass float32 mean and centred variance in both paths; only the
summation order differs, as it already does from torch's.
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
def _modulation(ptr, rows, cols, mask, SHARED: tl.constexpr):
    """The [TOKENS, BLOCK] tile of a modulation (0 where masked); with ``SHARED`` (one row a sample,
    read by each of its tokens) kept in L2 ahead of the streamed activations: 0.4-0.6% faster at
    32,760 x 5120 on an H100, side by side with the same kernel without the hint
    (benchmarks/results/2026-11-26_NVIDIA-H100-80GB-HBM3_s15_kernel_changes_ab.json)."""
    offsets = rows[:, None] + cols[None, :]
    if SHARED:
        tile = tl.load(ptr + offsets, mask=mask, other=0.0, eviction_policy="evict_last")
    else:
        tile = tl.load(ptr + offsets, mask=mask, other=0.0)
    return tile


@triton.jit
def _row_input(x_ptr, y_ptr, gate_ptr, x_rows, y_rows, gate_rows, cols, mask, GATED: tl.constexpr,
               SHARED: tl.constexpr):
    """The float32 [TOKENS, BLOCK] tile to normalise: ``x``, or ``x + y * gate`` when ``GATED``; 0
    where masked."""
    h = tl.load(x_ptr + x_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if GATED:
        y = tl.load(y_ptr + y_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        h = h + y * _modulation(gate_ptr, gate_rows, cols, mask, SHARED)
    return h


@triton.jit
def _modulate_store(normed, x_ptr, shift_ptr, scale_ptr, out_ptr, shift_rows, scale_rows, out_rows, cols,
                    mask, ROUND: tl.constexpr, SHARED: tl.constexpr):
    """Store ``normed * (1 + scale) + shift`` in the output dtype."""
    if ROUND:
        # The official model rounds the normalised value to the input's dtype before modulating.
        normed = round_through(normed, x_ptr.dtype.element_ty)
    shift = _modulation(shift_ptr, shift_rows, cols, mask, SHARED)
    scale = _modulation(scale_ptr, scale_rows, cols, mask, SHARED)
    out = normed * (1.0 + scale) + shift
    tl.store(out_ptr + out_rows[:, None] + cols[None, :], cast(out, out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layernorm_modulate_kernel(
    x_ptr, y_ptr, gate_ptr, shift_ptr, scale_ptr, residual_ptr, out_ptr, N, L, C, eps,
    x_sb, x_sl, y_sb, y_sl, gate_sb, gate_sl, shift_sb, shift_sl, scale_sb, scale_sl,
    TOKENS: tl.constexpr, BLOCK: tl.constexpr, TAIL: tl.constexpr, CHUNKED: tl.constexpr,
    STAGES: tl.constexpr, GATED: tl.constexpr, ROUND: tl.constexpr, SHARED: tl.constexpr,
):
    rows, row_mask, b, t = token_tile(tl.program_id(0), N, L, TOKENS)
    x_rows, y_rows, gate_rows = b * x_sb + t * x_sl, b * y_sb + t * y_sl, b * gate_sb + t * gate_sl
    shift_rows, scale_rows, out_rows = b * shift_sb + t * shift_sl, b * scale_sb + t * scale_sl, rows * C
    if CHUNKED:
        total = tl.zeros([TOKENS, BLOCK], dtype=tl.float32)
        for start in tl.range(0, C, BLOCK, num_stages=STAGES):
            cols = start + tl.arange(0, BLOCK)
            mask = tile_mask(row_mask, cols, C)
            h = _row_input(x_ptr, y_ptr, gate_ptr, x_rows, y_rows, gate_rows, cols, mask, GATED, SHARED)
            if GATED:
                tl.store(residual_ptr + out_rows[:, None] + cols[None, :], h, mask=mask)
            total += h
        mean = tl.sum(total, axis=1) / C
        squares = tl.zeros([TOKENS, BLOCK], dtype=tl.float32)
        for start in tl.range(0, C, BLOCK, num_stages=STAGES):
            cols = start + tl.arange(0, BLOCK)
            mask = tile_mask(row_mask, cols, C)
            h = _row_input(x_ptr, y_ptr, gate_ptr, x_rows, y_rows, gate_rows, cols, mask, GATED, SHARED)
            centred = tl.where(mask, h - mean[:, None], 0.0)
            squares += centred * centred
        rstd = tl.rsqrt(tl.sum(squares, axis=1) / C + eps)
        for start in tl.range(0, C, BLOCK, num_stages=STAGES):
            cols = start + tl.arange(0, BLOCK)
            mask = tile_mask(row_mask, cols, C)
            # Recomputed rather than read back from the stored residual: the same arithmetic on
            # the same inputs, so the same values, with no dependence on store-to-load ordering.
            h = _row_input(x_ptr, y_ptr, gate_ptr, x_rows, y_rows, gate_rows, cols, mask, GATED, SHARED)
            _modulate_store((h - mean[:, None]) * rstd[:, None], x_ptr, shift_ptr, scale_ptr, out_ptr,
                            shift_rows, scale_rows, out_rows, cols, mask, ROUND, SHARED)
    else:
        # Every load is issued before the first reduction, so a program has its whole row in flight.
        cols = tl.arange(0, BLOCK)
        mask = tile_mask(row_mask, cols, C)
        h = _row_input(x_ptr, y_ptr, gate_ptr, x_rows, y_rows, gate_rows, cols, mask, GATED, SHARED)
        if TAIL:
            tail_cols = BLOCK + tl.arange(0, TAIL)
            tail_mask = tile_mask(row_mask, tail_cols, C)
            h_tail = _row_input(x_ptr, y_ptr, gate_ptr, x_rows, y_rows, gate_rows, tail_cols, tail_mask,
                                GATED, SHARED)
        if GATED:
            tl.store(residual_ptr + out_rows[:, None] + cols[None, :], h, mask=mask)
            if TAIL:
                tl.store(residual_ptr + out_rows[:, None] + tail_cols[None, :], h_tail, mask=tail_mask)
        total = tl.sum(h, axis=1)
        if TAIL:
            total += tl.sum(h_tail, axis=1)
        mean = total / C
        centred = tl.where(mask, h - mean[:, None], 0.0)
        squares = tl.sum(centred * centred, axis=1)
        if TAIL:
            centred_tail = tl.where(tail_mask, h_tail - mean[:, None], 0.0)
            squares += tl.sum(centred_tail * centred_tail, axis=1)
        rstd = tl.rsqrt(squares / C + eps)
        _modulate_store(centred * rstd[:, None], x_ptr, shift_ptr, scale_ptr, out_ptr, shift_rows, scale_rows,
                        out_rows, cols, mask, ROUND, SHARED)
        if TAIL:
            _modulate_store(centred_tail * rstd[:, None], x_ptr, shift_ptr, scale_ptr, out_ptr, shift_rows,
                            scale_rows, out_rows, tail_cols, tail_mask, ROUND, SHARED)


def _launch(
    op: str, x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, shift: torch.Tensor,
    scale: torch.Tensor, eps: float, round_to_input: bool, out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, length, width = x.shape
    config = row_config(op, width)
    out = torch.empty((batch, length, width), dtype=out_dtype, device=x.device)
    gated = y is not None
    residual = torch.empty((batch, length, width), dtype=torch.float32, device=x.device) if gated else out
    y, gate = (y, gate) if gated else (x, x)
    if out.numel():
        rows = batch * length
        block, tail = config.tiles(op, width)
        modulation = (gate, shift, scale) if gated else (shift, scale)
        _layernorm_modulate_kernel[(triton.cdiv(rows, config.tokens),)](
            x, y, gate, shift, scale, residual, out, rows, length, width, eps,
            *row_strides(x), *row_strides(y), *row_strides(gate), *row_strides(shift), *row_strides(scale),
            TOKENS=config.tokens, BLOCK=block, TAIL=tail, CHUNKED=bool(config.chunk), STAGES=config.stages,
            GATED=gated,
            ROUND=round_to_input, SHARED=all(row_strides(t)[1] == 0 for t in modulation),
            num_warps=config.warps,
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
