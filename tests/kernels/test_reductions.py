"""rel_l1 and rel_l2 against the references."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import randn, shape_cases
from tests.kernels.tolerances import REDUCTION_RTOL
from wan_kernels import reference

OPS = pytest.mark.parametrize("name", ["rel_l1", "rel_l2"])


def _check(name: str, a: torch.Tensor, b: torch.Tensor, stride: int) -> None:
    actual = getattr(wan_kernels, name)(a, b, stride)
    expected = getattr(reference, name)(a, b, stride)
    assert actual.shape == () and actual.dtype == torch.float32 and actual.device == a.device
    torch.testing.assert_close(actual, expected, rtol=REDUCTION_RTOL, atol=0)


@OPS
@pytest.mark.parametrize("shape, dtype, stride", shape_cases([4, 1, 2]))
def test_relative_error(backend, name, shape, dtype, stride):
    b = randn(shape, dtype, seed=1)
    a = (b.float() + randn(shape, seed=2, scale=0.1)).to(dtype)
    _check(name, a, b, stride)


@OPS
@pytest.mark.parametrize("dtypes", [(torch.bfloat16, torch.float32), (torch.float32, torch.float16)])
def test_leading_dims_and_mixed_dtypes(backend, name, dtypes):
    shape = (2, 3, 9, 77)
    _check(name, randn(shape, dtypes[0], seed=1), randn(shape, dtypes[1], seed=2), 4)


@OPS
def test_token_strided_inputs(backend, name):
    a, b = randn((2, 18, 64), seed=1)[:, ::2], randn((2, 9, 128), seed=2)[..., :64]
    _check(name, a, b, 2)


@OPS
def test_no_tokens_gives_nan(backend, name):
    """0 / 0 over no tokens, as the reference's empty sums give (and nothing launched on nothing)."""
    a = randn((2, 0, 64))
    actual = getattr(wan_kernels, name)(a, a, 1)
    assert actual.shape == () and torch.isnan(actual) and torch.isnan(getattr(reference, name)(a, a, 1))


@OPS
def test_zero_reference_gives_inf_or_nan(backend, name):
    """As documented: ``inf`` where the sampled b is all zeros, ``nan`` where a is too."""
    zeros, a = randn((2, 7, 64)) * 0, randn((2, 7, 64), seed=1)
    op = getattr(wan_kernels, name)
    assert torch.isinf(op(a, zeros, 2)) and torch.isnan(op(zeros, zeros, 2))


@OPS
def test_a_stride_past_the_last_token_samples_the_first_only(backend, name):
    """Up to INT64_MAX, without the count of sampled tokens overflowing."""
    a, b = randn((2, 7, 64), seed=1), randn((2, 7, 64), seed=2)
    for stride in (7, 2**63 - 1):
        _check(name, a, b, stride)
