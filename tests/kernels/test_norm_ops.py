"""layernorm_modulate, gated_residual and their fusion against the references."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import LONG_SHAPES, MODULATIONS, modulation, randn, shape_cases
from tests.kernels.tolerances import assert_matches, coarsest
from wan_kernels import reference

EPS = 1e-6


@pytest.mark.parametrize("shape, dtype, kind", shape_cases(MODULATIONS, long_shapes=LONG_SHAPES[:1]))
def test_layernorm_modulate(backend, shape, dtype, kind):
    x = randn(shape, dtype, seed=1)
    shift, scale = modulation(shape, kind, seed=2), modulation(shape, kind, seed=3, scale=0.5)
    actual = wan_kernels.layernorm_modulate(x, shift, scale, EPS)
    assert_matches(actual, reference.layernorm_modulate(x, shift, scale, EPS), dtype)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("round_to_input", [True, False], ids=["faithful", "unrounded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layernorm_modulate_variants(backend, dtype, round_to_input, out_dtype):
    shape = (2, 7, 1000)
    x = randn(shape, dtype, seed=1)
    shift, scale = modulation(shape, "per_sample", seed=2), modulation(shape, "per_sample", seed=3, scale=0.5)
    actual = wan_kernels.layernorm_modulate(x, shift, scale, EPS, round_to_input, out_dtype)
    expected = reference.layernorm_modulate(x, shift, scale, EPS, round_to_input, out_dtype)
    assert_matches(actual, expected, coarsest(out_dtype, dtype if round_to_input else torch.float32))


def test_faithful_rounding_is_the_official_arithmetic():
    x = randn((1, 7, 77), torch.bfloat16, seed=1)
    shift, scale = modulation(x.shape, "per_token", seed=2), modulation(x.shape, "per_token", seed=3)
    official = reference.modulate(reference.layer_norm(x, None, None, EPS), shift, scale)
    assert torch.equal(reference.layernorm_modulate(x, shift, scale, EPS), official)


@pytest.mark.parametrize("shape, dtype, kind", shape_cases(MODULATIONS))
def test_gated_residual(backend, shape, dtype, kind):
    x, y, gate = randn(shape, seed=1), randn(shape, dtype, seed=2), modulation(shape, kind, seed=3)
    actual = wan_kernels.gated_residual(x, y, gate)
    assert_matches(actual, reference.gated_residual(x, y, gate), torch.float32)


@pytest.mark.parametrize("kind", MODULATIONS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gated_residual_low_precision_stream(backend, dtype, kind):
    """A bfloat16/float16 residual stream, as diffusers keeps it: summed in float32, rounded once."""
    shape = (2, 7, 1000)
    x, y, gate = randn(shape, dtype, seed=1), randn(shape, dtype, seed=2), modulation(shape, kind, seed=3)
    actual = wan_kernels.gated_residual(x, y, gate)
    assert_matches(actual, reference.gated_residual(x, y, gate), dtype)


@pytest.mark.parametrize("shape, dtype, kind", shape_cases(MODULATIONS))
def test_gated_residual_layernorm_modulate(backend, shape, dtype, kind):
    x, y = randn(shape, seed=1), randn(shape, dtype, seed=2)
    gate, shift = modulation(shape, kind, seed=3), modulation(shape, kind, seed=4)
    scale = modulation(shape, kind, seed=5, scale=0.5)
    residual, hidden = wan_kernels.gated_residual_layernorm_modulate(x, y, gate, shift, scale, EPS)
    expected = reference.gated_residual_layernorm_modulate(x, y, gate, shift, scale, EPS)
    assert_matches(residual, expected[0], torch.float32)
    assert_matches(hidden, expected[1], torch.float32)


@pytest.mark.parametrize("width", [4097, 6000, 13000])
def test_wide_rows_with_a_partial_last_chunk(backend, width):
    """Rows over 4096 channels, which the Triton kernel walks in 1024-channel chunks, the last partial;
    and over 12,224, which the CUDA kernel re-reads rather than keeps in shared memory."""
    shape = (2, 3, width)
    x, y = randn(shape, seed=1), randn(shape, torch.bfloat16, seed=2)
    gate, shift = modulation(shape, "per_sample", seed=3), modulation(shape, "per_sample", seed=4)
    scale = modulation(shape, "per_sample", seed=5, scale=0.5)
    assert_matches(wan_kernels.layernorm_modulate(y, shift, scale, EPS),
                   reference.layernorm_modulate(y, shift, scale, EPS), torch.bfloat16)
    args = (x, y, gate, shift, scale, EPS)
    expected = reference.gated_residual_layernorm_modulate(*args)
    for actual, want in zip(wan_kernels.gated_residual_layernorm_modulate(*args), expected, strict=True):
        assert_matches(actual, want, torch.float32)


def test_strided_inputs(backend):
    """Token-strided activations and per-sample rows sliced from a [B, 6, C] table, as the DiT has."""
    x = randn((2, 14, 77), torch.bfloat16, seed=1)[:, ::2]
    residual = randn((2, 14, 77), seed=2)[:, 1::2]
    table = randn((2, 6, 77), seed=3)
    shift, scale, gate = (row[:, None] for row in table.unbind(1)[:3])
    assert_matches(wan_kernels.layernorm_modulate(x, shift, scale, EPS),
                   reference.layernorm_modulate(x, shift, scale, EPS), torch.bfloat16)
    assert_matches(wan_kernels.gated_residual(residual, x, gate),
                   reference.gated_residual(residual, x, gate), torch.float32)
    args = (residual, x, gate, shift, scale, EPS, torch.bfloat16)
    actual = wan_kernels.gated_residual_layernorm_modulate(*args)
    expected = reference.gated_residual_layernorm_modulate(*args)
    assert_matches(actual[0], expected[0], torch.float32)
    assert_matches(actual[1], expected[1], torch.bfloat16)


def test_no_tokens(backend):
    """L = 0: empty outputs of the right shapes and dtypes, and no kernel launched on nothing."""
    shape = (2, 0, 64)
    x, y, row = randn(shape, seed=1), randn(shape, torch.bfloat16, seed=2), modulation(shape, "per_sample", 3)
    assert wan_kernels.layernorm_modulate(y, row, row, EPS, out_dtype=torch.bfloat16).shape == shape
    assert wan_kernels.gated_residual(x, y, row).dtype == torch.float32
    residual, hidden = wan_kernels.gated_residual_layernorm_modulate(x, y, row, row, row, EPS)
    assert residual.shape == hidden.shape == shape
    cos = randn((0, 1, 8))
    q, k = wan_kernels.qk_rmsnorm_rope(y, y, row[0, 0], row[0, 0], cos, cos, 4, EPS)
    assert q.shape == k.shape == (2, 0, 4, 16) and q.dtype == torch.bfloat16
