"""Shapes, dtypes and inputs of the kernel tests."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

BACKENDS = ("torch", "triton", "cpp", "cuda")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# [B, L, C]: real widths (3072, 5120), a small power of two and two awkward widths.
SHAPES = [(2, 1, 64), (2, 7, 77), (1, 7, 1000), (2, 7, 3072), (1, 7, 5120)]
# Long token counts. The Triton interpreter costs ~3 ms per program (one token), so each op runs
# these once, in bfloat16 and with one variant only; the GPU covers real lengths in
# benchmarks/bench_kernels.py.
LONG_SHAPES = [(1, 1025, 1000), (1, 4099, 77)]
MODULATIONS = ("per_token", "per_sample")


def _param(shape: tuple[int, ...], dtype: torch.dtype, extra: tuple, prefix: str = ""):
    dims = prefix + "x".join(map(str, shape))
    ident = "-".join([dims, str(dtype).removeprefix("torch."), *map(str, extra)])
    return pytest.param(shape, dtype, *extra, id=ident)


def shape_cases(variants: Sequence = (), long_shapes: Sequence = LONG_SHAPES) -> list:
    """(shape, dtype[, variant]) parameters: ``SHAPES`` × ``DTYPES`` × ``variants``, then each of
    ``long_shapes`` once, in bfloat16 with the first variant."""
    extras = [(v,) for v in variants] or [()]
    cases = [_param(s, d, e) for s in SHAPES for d in DTYPES for e in extras]
    return cases + [_param(s, torch.bfloat16, extras[0], prefix="long-") for s in long_shapes]


def randn(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0,
          scale: float = 1.0) -> torch.Tensor:
    """Seeded standard-normal values times ``scale``, rounded to ``dtype``, on ``DEVICE``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype).to(DEVICE)


def modulation(shape: tuple[int, int, int], kind: str, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A float32 modulation row of ``kind``: ``per_token`` [B, L, C] or ``per_sample`` [B, 1, C]."""
    batch, length, width = shape
    return randn((batch, length if kind == "per_token" else 1, width), seed=seed, scale=scale)


EPS = 1e-6


def block_inputs() -> tuple[torch.Tensor, ...]:
    """A DiT block's tensors at [B, L, C] = [2, 7, 64]: x, y (bfloat16), gate, shift, scale, a
    cache input, cos, sin (4 heads of 16) and a norm weight."""
    shape = (2, 7, 64)
    row = (2, 1, 64)
    angles = randn((7, 1, 8), seed=7)
    return (randn(shape, seed=1), randn(shape, torch.bfloat16, seed=2), randn(row, seed=3),
            randn(row, seed=4), randn(row, seed=5, scale=0.5), randn(shape, seed=6), angles.cos(),
            angles.sin(), 1 + randn((64,), seed=8, scale=0.1))


# Each op's arguments in schema order, taken from block_inputs().
OP_ARGS = {
    "layernorm_modulate": lambda a: (a[1], a[3], a[4], EPS, True, torch.float32),
    "gated_residual": lambda a: (a[0], a[1], a[2]),
    "gated_residual_layernorm_modulate": lambda a: (a[0], a[1], a[2], a[3], a[4], EPS, torch.bfloat16),
    "rel_l1": lambda a: (a[0], a[5], 2),
    "rel_l2": lambda a: (a[0], a[5], 1),
    "residual_apply": lambda a: (a[1], a[5]),
    "residual_capture": lambda a: (a[0], a[5]),
    "qk_rmsnorm_rope": lambda a: (a[1], a[1], a[8], a[8], a[6], a[7], 4, EPS),
}
