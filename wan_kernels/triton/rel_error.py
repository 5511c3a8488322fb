"""Triton ``rel_l1`` and ``rel_l2``: partial sums over a tile of tokens per program, or with
``RowConfig.programs_per_sm`` over the tiles a program takes in turn (geometry from
``launch.row_config``), then one program reduces them and divides: a second launch, or with
``RowConfig.one_launch`` the last program of the first to finish its partial sums.

No host synchronisation (but where ``one_launch`` takes a new block of counters: once a device,
then once some 2048 more streams or captured calls have taken one, see ``counters``); the reduction
order is fixed, so results are deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wan_kernels.dispatch import register
from wan_kernels.triton.counters import counter_for
from wan_kernels.triton.launch import as_rows, programs, row_config
from wan_kernels.triton.tiles import tile_mask, token_tile

_FINISH_MAX_BLOCK = 4096
_ONE_LAUNCH_PARTIALS_A_THREAD = 4


@triton.jit
def _load_pair(a_ptr, b_ptr, a_rows, b_rows, cols, mask):
    """The float32 [TOKENS, width] tiles of ``a`` and ``b`` at channels ``cols`` (0 where masked)."""
    a = tl.load(a_ptr + a_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + b_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return a, b


@triton.jit
def _terms(a, b, SQUARE: tl.constexpr):
    """The numerator's and denominator's terms: squared or absolute differences and values."""
    if SQUARE:
        return (a - b) * (a - b), b * b
    return tl.abs(a - b), tl.abs(b)


@triton.jit
def _add_tile(a_ptr, b_ptr, num, den, num_tail, den_tail, tile, rows, L_sampled, C, stride, a_sn, a_sl, b_sn,
              b_sl, SQUARE: tl.constexpr, TOKENS: tl.constexpr, BLOCK: tl.constexpr, TAIL: tl.constexpr,
              STAGES: tl.constexpr):
    """The running sums with tile ``tile``'s terms added: [TOKENS, BLOCK] lanes, and with ``TAIL``
    [TOKENS] row sums of the second tile."""
    _, row_mask, n, sample = token_tile(tile, rows, L_sampled, TOKENS)
    t = sample * stride
    a_rows, b_rows = n * a_sn + t * a_sl, n * b_sn + t * b_sl
    if TAIL:
        # A row split in two tiles: both loaded before either is summed.
        cols, tail_cols = tl.arange(0, BLOCK), BLOCK + tl.arange(0, TAIL)
        a, b = _load_pair(a_ptr, b_ptr, a_rows, b_rows, cols, tile_mask(row_mask, cols, C))
        tail_mask = tile_mask(row_mask, tail_cols, C)
        a_tail, b_tail = _load_pair(a_ptr, b_ptr, a_rows, b_rows, tail_cols, tail_mask)
        num_terms, den_terms = _terms(a, b, SQUARE)
        num += num_terms
        den += den_terms
        num_terms, den_terms = _terms(a_tail, b_tail, SQUARE)
        num_tail += tl.sum(num_terms, axis=1)
        den_tail += tl.sum(den_terms, axis=1)
    else:
        for start in tl.range(0, C, BLOCK, num_stages=STAGES):
            cols = start + tl.arange(0, BLOCK)
            a, b = _load_pair(a_ptr, b_ptr, a_rows, b_rows, cols, tile_mask(row_mask, cols, C))
            num_terms, den_terms = _terms(a, b, SQUARE)
            num += num_terms
            den += den_terms
    return num, den, num_tail, den_tail


@triton.jit
def _reduce_partials(partial_ptr, out_ptr, count, SQUARE: tl.constexpr, BLOCK: tl.constexpr,
                     CACHE: tl.constexpr):
    """``out`` = the ratio of the ``count`` partials' sums (its square root with ``SQUARE``), summed
    in a fixed order: [BLOCK, 2] tiles, each partial's two sums in one 8-byte load; each pass is a
    round trip to memory that nothing else hides, so BLOCK grows with the count
    (``_finish_geometry``). ``CACHE`` is the loads' cache modifier."""
    idx = tl.arange(0, BLOCK)[:, None]
    which = tl.arange(0, 2)[None, :]
    sums = tl.zeros([BLOCK, 2], dtype=tl.float32)
    for start in range(0, count, BLOCK):
        sums += tl.load(partial_ptr + 2 * (start + idx) + which, mask=(start + idx) < count, other=0.0,
                        cache_modifier=CACHE)
    num, den = tl.split(sums)
    ratio = tl.sum(num, axis=0) / tl.sum(den, axis=0)
    tl.store(out_ptr, tl.sqrt(ratio) if SQUARE else ratio)


@triton.jit
def _partial_sums_kernel(
    a_ptr, b_ptr, partial_ptr, out_ptr, counter_ptr, tiles, rows, L_sampled, C, stride, a_sn, a_sl, b_sn,
    b_sl, SQUARE: tl.constexpr, TOKENS: tl.constexpr, BLOCK: tl.constexpr, TAIL: tl.constexpr,
    STAGES: tl.constexpr, ONE_LAUNCH: tl.constexpr, FINISH_BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    num = tl.zeros([TOKENS, BLOCK], dtype=tl.float32)
    den = tl.zeros([TOKENS, BLOCK], dtype=tl.float32)
    num_tail = tl.zeros([TOKENS], dtype=tl.float32)
    den_tail = tl.zeros([TOKENS], dtype=tl.float32)
    # One tile a program, or with a grid of fewer programs than tiles the tiles in turn.
    for tile in range(program, tiles, tl.num_programs(0)):
        num, den, num_tail, den_tail = _add_tile(
            a_ptr, b_ptr, num, den, num_tail, den_tail, tile, rows, L_sampled, C, stride, a_sn, a_sl, b_sn,
            b_sl, SQUARE, TOKENS, BLOCK, TAIL, STAGES)
    tl.store(partial_ptr + 2 * program, tl.sum(tl.sum(num, axis=1), axis=0) + tl.sum(num_tail, axis=0))
    tl.store(partial_ptr + 2 * program + 1, tl.sum(tl.sum(den, axis=1), axis=0) + tl.sum(den_tail, axis=0))
    if ONE_LAUNCH:
        # The last program to take a ticket reduces every program's partials. The barrier puts
        # this program's stores before its ticket (whichever thread made them), the ticket's
        # acquire-release orders them before the last program's loads, which skip L1 (not
        # coherent across SMs); the last program leaves the counter at 0 for the next launch.
        tl.debug_barrier()
        ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
        if ticket == tl.num_programs(0) - 1:
            _reduce_partials(partial_ptr, out_ptr, tl.num_programs(0), SQUARE, FINISH_BLOCK, ".cg")
            tl.store(counter_ptr, 0)


@triton.jit
def _finish_kernel(partial_ptr, out_ptr, count, SQUARE: tl.constexpr, BLOCK: tl.constexpr):
    _reduce_partials(partial_ptr, out_ptr, count, SQUARE, BLOCK, "")


def _finish_geometry(count: int) -> tuple[int, int]:
    """The finishing program's block (partials a pass) and warps for ``count`` partials: one pass
    up to 4096 of them, on 4 warps up to 1024 and 8 beyond."""
    block = min(_FINISH_MAX_BLOCK, max(32, triton.next_power_of_2(count)))
    return block, 4 if block <= 1024 else 8


def _relative_error(op: str, a: torch.Tensor, b: torch.Tensor, stride: int, square: bool) -> torch.Tensor:
    a3, b3 = as_rows(a), as_rows(b)
    count, length, width = a3.shape
    sampled = triton.cdiv(length, stride)
    rows = count * sampled
    config = row_config(op, width)
    tiles = triton.cdiv(rows, config.tokens)
    grid = programs(config, tiles, a.device)
    partials = torch.empty((max(grid, 1), 2), dtype=torch.float32, device=a.device)
    out = torch.empty((), dtype=torch.float32, device=a.device)
    finish_block, finish_warps = _finish_geometry(grid)
    # No program, no last program: the empty sums' NaN comes from the finishing launch.
    one_launch = config.one_launch and grid > 0
    if one_launch:
        # Registers are allocated for the kernel's largest need, so the partials' tile, 2 values a
        # lane, keeps to 8 a thread: more cost residency in the pass over the rows (compiled for
        # sm_90, the 4-warp sweep geometries held 12 programs an SM as in two launches; at 16 values
        # a thread 10 under Triton 3.6, at 64 only 3).
        finish_block = min(finish_block, _ONE_LAUNCH_PARTIALS_A_THREAD * 32 * config.warps)
    if grid:
        block, tail = config.tiles(op, width)
        _partial_sums_kernel[(grid,)](
            a3, b3, partials, out, counter_for(a.device) if one_launch else None, tiles, rows, sampled, width,
            stride, a3.stride(0), a3.stride(1), b3.stride(0), b3.stride(1), SQUARE=square,
            TOKENS=config.tokens, BLOCK=block, TAIL=tail, STAGES=config.stages, ONE_LAUNCH=one_launch,
            # Unused in two launches: a constant there, so their kernel does not vary with the grid.
            FINISH_BLOCK=finish_block if one_launch else 1, num_warps=config.warps,
        )
    if not one_launch:
        _finish_kernel[(1,)](partials, out, grid, SQUARE=square, BLOCK=finish_block, num_warps=finish_warps)
    return out


def rel_l1(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    """``sum|a - b| / sum|b|`` over every ``stride``-th token."""
    return _relative_error("rel_l1", a, b, stride, square=False)


def rel_l2(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    """``|a - b|_2 / |b|_2`` over every ``stride``-th token."""
    return _relative_error("rel_l2", a, b, stride, square=True)


register("triton", "rel_l1")(rel_l1)
register("triton", "rel_l2")(rel_l2)
