"""Launch geometry shared by the Triton launchers.

The elementwise kernels (``gated_residual``, the residual ops) take theirs from a ``BlockConfig``:
how many elements one program handles, on how many warps. The row kernels (the norms,
``qk_rmsnorm_rope``, the relative errors) take theirs from a ``RowConfig``: how many tokens one
program handles, whether it holds a token's row whole in registers (as one tile padded to a power
of two, or split in two tiles that waste fewer lanes) or walks it in chunks, and its warps.
``row_config`` gives the default for an op and width, ``block_config`` for an elementwise op;
``configured`` replaces either inside a ``with`` block, which is how ``benchmarks.bench_kernels
--sweep`` times the alternatives on a GPU. Every configuration computes the same function (the
tests run each op under several); only the summation order of the statistics differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import triton

from wan_kernels.checks import fail

# A row held whole in registers beyond this width would spill; chunked configurations have no limit.
MAX_ROW_WIDTH = 16384
# Widest row the norms keep whole in one tile by default; up to twice that they split it in two.
_MAX_ROW_IN_REGISTERS = 4096


def _require_powers_of_two(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 1 or value & (value - 1):
            raise ValueError(f"{type(config).__name__}.{name} must be a power of two >= 1, got {value}")


@dataclass(frozen=True)
class BlockConfig:
    """Geometry of an elementwise kernel's program: ``block`` consecutive elements on ``warps``
    warps (powers of two), ``block / (32 * warps)`` elements a thread."""

    block: int = 1024
    warps: int = 4

    def __post_init__(self) -> None:
        _require_powers_of_two(self, "block", "warps")

    @property
    def label(self) -> str:
        return f"{self.block} elements, {self.warps} warps"


@dataclass(frozen=True)
class RowConfig:
    """Geometry of a row kernel's program: ``tokens`` rows of the [N, L, C] input (a power of two),
    each held whole in registers (``chunk`` 0) or walked ``chunk`` channels at a time (a power of
    two of at least 2, so a chunk never splits a rotation pair), on ``warps`` warps.

    A whole row is one tile padded to a power of two, or with ``split`` two tiles loaded together:
    the widest power of two that fits, then the rest padded (C = 5120 as 4096 + 1024 lanes instead
    of 8192, so registers hold no padding and more rows fit on an SM).

    ``programs_per_sm`` (the relative errors' kernels only, ``REDUCTION_OPS``): 0 launches a
    program per tile of tokens; n > 0 at most n programs per SM, each taking tiles in turn and
    reducing its sums once at the end, so fewer partial sums are written and reduced.
    ``one_launch`` (``REDUCTION_OPS`` only): the last program to write its partial sums reduces
    them all (counting programs with an atomic counter), sparing the second launch and the gap
    between the two.
    ``stages`` (chunked rows only): Triton's loop pipelining of the walk over a row's chunks
    (``tl.range(num_stages=stages)``): the loads of the next ``stages - 1`` chunks are in flight,
    through shared memory, while one is summed. 1 (the default) pipelines nothing, as a plain
    ``range`` loop, which Triton never pipelines for loads that do not feed a matrix product."""

    tokens: int = 1
    chunk: int = 0
    warps: int = 4
    split: bool = False
    programs_per_sm: int = 0
    one_launch: bool = False
    stages: int = 1

    def __post_init__(self) -> None:
        _require_powers_of_two(self, "tokens", "warps")
        if self.chunk and (self.chunk < 2 or self.chunk & (self.chunk - 1)):
            raise ValueError(
                f"RowConfig.chunk must be 0 (whole row) or a power of two >= 2, got {self.chunk}")
        if self.split and self.chunk:
            raise ValueError("RowConfig.split applies to whole rows: give chunk=0 with split=True")
        if self.programs_per_sm < 0:
            raise ValueError(f"RowConfig.programs_per_sm must be 0 (a program per tile) or more, got "
                             f"{self.programs_per_sm}")
        if self.stages < 1:
            raise ValueError(f"RowConfig.stages must be 1 (no pipelining) or more, got {self.stages}")
        if self.stages > 1 and not self.chunk:
            raise ValueError("RowConfig.stages pipelines the walk over a row's chunks: give chunk > 0 with "
                             "stages > 1")

    @property
    def label(self) -> str:
        walk = f"chunk {self.chunk}" if self.chunk else "row in two tiles" if self.split else "whole row"
        label = f"{walk}, {self.tokens} token{'s' * (self.tokens > 1)}, {self.warps} warps"
        label += f", {self.stages} stages" if self.stages > 1 else ""
        label += f", {self.programs_per_sm} programs an SM" if self.programs_per_sm else ""
        return label + (", one launch" if self.one_launch else "")

    def tiles(self, op: str, width: int) -> tuple[int, int]:
        """Channels of the first tile (the chunk, the row padded to a power of two, or with
        ``split`` the widest power of two that fits) and of the second (0 if none): powers of two
        of at least 2."""
        if self.chunk:
            return self.chunk, 0
        if width > MAX_ROW_WIDTH:
            fail(op, f"the triton backend holds rows of at most {MAX_ROW_WIDTH} channels whole, got {width}")
        padded = max(2, triton.next_power_of_2(width))
        if not self.split or padded == width or width <= 2:
            return padded, 0
        head = padded // 2
        return head, max(2, triton.next_power_of_2(width - head))


def _whole_row(width: int) -> RowConfig:
    """One token per program, its row padded to a power of two, a warp per 512 lanes (1 to 16)."""
    return RowConfig(warps=max(1, min(16, triton.next_power_of_2(width) // 512)))


def _split_row(op: str, width: int) -> RowConfig:
    """One token per program, its row in two tiles, a warp per 1024 lanes of the first (4 to 16)."""
    head = RowConfig(split=True).tiles(op, width)[0]
    return RowConfig(split=True, warps=max(4, min(16, head // 1024)))


def _default(op: str, width: int) -> RowConfig:
    """The geometry measured fastest at the DiT's widths, by ``bench_kernels --sweep`` on an H100
    (benchmarks/results/2026-11-26_NVIDIA-H100-80GB-HBM3_bench_kernels_sweep.json, fractions of
    copy bandwidth). The winners keep a whole row's loads in flight before reducing it, with no
    padding lanes or few; widths not measured follow the same rule."""
    padded = max(2, triton.next_power_of_2(width))
    if op in ("rel_l1", "rel_l2"):
        # Four tokens a program, each walked in 1024-channel chunks: 0.87 of copy at C = 5120 and
        # 3072 (one token: 0.76 and 0.67; whole or split rows: 0.54-0.84).
        return RowConfig(chunk=min(padded, 1024), tokens=4, warps=8)
    if op == "qk_rmsnorm_rope":
        # Split rows on 4 warps: 0.89 of copy at C = 5120, 0.91 at 3072 (whole rows 0.60 and 0.71,
        # chunks at most 0.72 and 0.81).
        return _split_row(op, width) if padded <= MAX_ROW_WIDTH else RowConfig(chunk=1024)
    # The norms: whole rows reach copy bandwidth at C = 3072 (1.01, per-token modulation). At 5120
    # split rows on 4 warps reach 0.96, whole rows of 8192 lanes 0.93 on 8 warps and 0.80 on 16,
    # 1024-channel chunks 0.70; fused with the residual update, split rows on 4 warps and whole
    # rows on 8 tie at 0.98 (chunks 0.55), and the fused op takes the unfused one's geometry.
    # Rows wider than measured walk chunks.
    if padded <= _MAX_ROW_IN_REGISTERS:
        return _whole_row(width)
    return _split_row(op, width) if padded <= 2 * _MAX_ROW_IN_REGISTERS else RowConfig(chunk=1024)


# The ops whose kernels are elementwise, configured by a BlockConfig; the others by a RowConfig.
ELEMENTWISE_OPS = ("gated_residual", "residual_apply", "residual_capture")
# The row ops that reduce over all their tokens, the only ones RowConfig.programs_per_sm and
# RowConfig.one_launch apply to.
REDUCTION_OPS = ("rel_l1", "rel_l2")
_overrides: dict[str, RowConfig | BlockConfig] = {}


def row_config(op: str, width: int) -> RowConfig:
    """The geometry the row kernel of ``op`` launches with at ``width`` channels."""
    config = _overrides.get(op)
    return config if isinstance(config, RowConfig) else _default(op, width)


def block_config(op: str) -> BlockConfig:
    """The geometry the elementwise kernel of ``op`` launches with: by default 1024 elements on 4
    warps, within 1.8% of the fastest of 512-4096 elements on 4-16 warps at the DiT's shapes on an
    H100 (benchmarks/results/2026-11-26_NVIDIA-H100-80GB-HBM3_s14_bench_kernels_sweep.json; for
    ``gated_residual`` measured with its programs in token-major order, before they took a row's
    blocks in turn)."""
    config = _overrides.get(op)
    return config if isinstance(config, BlockConfig) else BlockConfig()


@contextmanager
def configured(op: str, config: RowConfig | BlockConfig) -> Iterator[None]:
    """Launch ``op`` with ``config`` inside the block (for tuning sweeps): a ``BlockConfig`` for
    the ``ELEMENTWISE_OPS``, a ``RowConfig`` for the others."""
    wanted = BlockConfig if op in ELEMENTWISE_OPS else RowConfig
    if not isinstance(config, wanted):
        raise TypeError(f"{op} launches with a {wanted.__name__}, got {config!r}")
    for field in ("programs_per_sm", "one_launch"):
        if getattr(config, field, 0) and op not in REDUCTION_OPS:
            raise ValueError(f"RowConfig.{field} applies to {', '.join(REDUCTION_OPS)}, not {op}")
    previous = _overrides.get(op)
    _overrides[op] = config
    try:
        yield
    finally:
        if previous is None:
            del _overrides[op]
        else:
            _overrides[op] = previous


def programs(config: RowConfig, tiles: int, device: torch.device) -> int:
    """How many programs a reduction kernel launches under ``config`` for ``tiles`` tiles of tokens
    on ``device`` (whose SMs are counted; a CPU, where Triton interprets, counts as one)."""
    if not config.programs_per_sm:
        return tiles
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return min(tiles, config.programs_per_sm * sms)


def row_strides(t: torch.Tensor) -> tuple[int, int]:
    """Element strides of ``t``'s batch and token dims ([B, L, C]); 0 for a broadcast token dim."""
    return t.stride(0), t.stride(1) if t.shape[1] > 1 else 0


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as [N, L, C]: its leading dims flattened into one (a view when its strides allow); N
    counted rather than inferred, which an empty ``t`` would leave ambiguous."""
    return t.reshape(math.prod(t.shape[:-2]), *t.shape[-2:])
