"""residual_apply and residual_capture against the references."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import randn, shape_cases
from tests.kernels.tolerances import assert_matches
from wan_kernels import reference

OPS = pytest.mark.parametrize("name", ["residual_apply", "residual_capture"])


@OPS
@pytest.mark.parametrize("shape, dtype", shape_cases())
def test_residual_cache(backend, name, shape, dtype):
    a, b = randn(shape, dtype, seed=1), randn(shape, seed=2)
    actual, expected = getattr(wan_kernels, name)(a, b), getattr(reference, name)(a, b)
    assert_matches(actual, expected, torch.float32)


@OPS
def test_non_contiguous_inputs(backend, name):
    a, b = randn((2, 14, 77), torch.bfloat16, seed=1)[:, ::2], randn((2, 7, 77), seed=2)
    assert_matches(getattr(wan_kernels, name)(a, b), getattr(reference, name)(a, b), torch.float32)


@OPS
@pytest.mark.parametrize("view", ["size-1 last dim of a wider row", "broadcast"])
def test_views_that_flatten_to_a_strided_row(backend, name, view):
    """Views that ``reshape(-1)`` leaves strided (a kernel reading them as flat would misread)."""
    if view == "broadcast":
        a = randn((1, 1, 1), seed=1).expand(3, 1, 1)
    else:
        a = randn((1, 4, 3), seed=1)[..., :1]
    b = randn(a.shape, seed=2)
    assert_matches(getattr(wan_kernels, name)(a, b), getattr(reference, name)(a, b), torch.float32)
