"""The C++ CPU kernels against the plain-torch references, with pytest-benchmark.

``pytest tests/kernels/test_bench_cpu.py --benchmark-enable`` times each op at a DiT-sized row
(C = 5120) and prints one table per op, its rows relative to the fastest (the cpp/torch ratio).
Under the default ``--benchmark-disable`` each case runs once, as a correctness check.
"""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import modulation, randn
from tests.kernels.tolerances import REDUCTION_RTOL, assert_matches
from wan_kernels import reference

EPS = 1e-6
SHAPE = (1, 256, 5120)
HEAD_DIM = 128


def _inputs() -> dict[str, tuple]:
    """The ops' arguments on the CPU, also where the other kernel tests run on a GPU."""
    x, y = randn(SHAPE, seed=1).cpu(), randn(SHAPE, torch.bfloat16, seed=2).cpu()
    shift, scale, gate = (modulation(SHAPE, "per_sample", seed=s).cpu() for s in (3, 4, 5))
    angles = randn((SHAPE[1], 1, HEAD_DIM // 2), seed=6, scale=3.0).cpu()
    weight = 1 + randn((SHAPE[2],), seed=7, scale=0.1).cpu()
    return {
        "layernorm_modulate": (y, shift, scale, EPS),
        "gated_residual": (x, y, gate),
        "gated_residual_layernorm_modulate": (x, y, gate, shift, scale, EPS, torch.bfloat16),
        "rel_l1": (x, y, 1),
        "rel_l2": (x, y, 1),
        "residual_apply": (y, x),
        "residual_capture": (x, y),
        "qk_rmsnorm_rope": (y, y, weight, weight, angles.cos(), angles.sin(), SHAPE[2] // HEAD_DIM, EPS),
    }


# Warmed up first and at least 50 rounds: timed from a cold start, the first calls (the thread
# pool's start, the outputs' first pages) made pytest-benchmark calibrate the C++ gated_residual to 5
# rounds and report it 1.9-4x slower than torch, when warmed up it is 2x faster.
@pytest.mark.benchmark(warmup=True, warmup_iterations=20, min_rounds=50)
@pytest.mark.parametrize("impl", ["cpp", "torch"])
@pytest.mark.parametrize("op", sorted(_inputs()))
def test_cpu_speed(benchmark, op, impl):
    args = _inputs()[op]
    fn = getattr(reference, op)
    if impl == "cpp":
        try:
            wan_kernels.set_backend("cpp")  # builds the extension on first use
        except ValueError as err:
            pytest.skip(f"C++ extension unavailable: {err}")
        fn = getattr(wan_kernels, op)
    benchmark.group = op
    try:
        actual = benchmark(fn, *args)
    finally:
        wan_kernels.set_backend("auto")
    expected = getattr(reference, op)(*args)
    for a, e in zip(*(r if isinstance(r, tuple) else (r,) for r in (actual, expected)), strict=True):
        if a.dim() == 0:
            torch.testing.assert_close(a, e, rtol=REDUCTION_RTOL, atol=0)
        else:
            assert_matches(a, e, torch.bfloat16)
