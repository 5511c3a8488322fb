"""qk_rmsnorm_rope against the reference, and the reference against the DiT's own composition."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import randn, shape_cases
from tests.kernels.tolerances import assert_matches
from wan_kernels import reference

EPS = 1e-6
HEAD_DIM = {64: 16, 77: None, 1000: 40, 3072: 128, 5120: 128}


def _inputs(shape: tuple[int, int, int], dtype: torch.dtype, head_dim: int):
    batch, length, width = shape
    q, k = randn(shape, dtype, seed=1), randn(shape, dtype, seed=2)
    weight_q, weight_k = 1 + randn((width,), seed=3, scale=0.1), 1 + randn((width,), seed=4, scale=0.1)
    angles = randn((length, 1, head_dim // 2), seed=5, scale=3.0)
    return q, k, weight_q, weight_k, angles.cos(), angles.sin(), width // head_dim


@pytest.mark.parametrize("shape, dtype", [c for c in shape_cases() if HEAD_DIM[c.values[0][-1]]])
def test_qk_rmsnorm_rope(backend, shape, dtype):
    args = _inputs(shape, dtype, HEAD_DIM[shape[2]])
    outputs = zip(wan_kernels.qk_rmsnorm_rope(*args, EPS), reference.qk_rmsnorm_rope(*args, EPS), strict=True)
    for actual, expected in outputs:
        assert_matches(actual, expected, dtype)


def test_rows_wider_than_the_cuda_kernels_shared_memory(backend):
    """C = 13,312 (104 heads of 128): the CUDA kernel re-reads such a row instead of caching it."""
    args = _inputs((1, 3, 13312), torch.bfloat16, 128)
    outputs = zip(wan_kernels.qk_rmsnorm_rope(*args, EPS), reference.qk_rmsnorm_rope(*args, EPS), strict=True)
    for actual, expected in outputs:
        assert_matches(actual, expected, torch.bfloat16)


def test_reference_is_the_dit_composition():
    q, k, weight_q, weight_k, cos, sin, heads = _inputs((2, 7, 64), torch.bfloat16, 16)
    out_q, _ = reference.qk_rmsnorm_rope(q, k, weight_q, weight_k, cos, sin, heads, EPS)
    normed = reference.rms_norm(q, weight_q, EPS).unflatten(-1, (heads, -1))
    assert torch.equal(out_q, reference.rope_interleaved(normed, cos, sin).to(torch.bfloat16))
