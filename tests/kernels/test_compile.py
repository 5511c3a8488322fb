"""The ops under torch.compile: traced without graph breaks, matching eager; their schemas and fakes."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import EPS, OP_ARGS, block_inputs, randn
from tests.kernels.tolerances import assert_matches


def _block_tail(x, y, gate, shift, scale, cache_input, cos, sin, weight):
    """A DiT-like sequence of the ops: residual, next sub-layer input, cache residual and q/k."""
    residual, hidden = wan_kernels.gated_residual_layernorm_modulate(x, y, gate, shift, scale, EPS)
    hidden = wan_kernels.layernorm_modulate(hidden.bfloat16(), shift, scale, EPS)
    residual = wan_kernels.gated_residual(residual, hidden.bfloat16(), gate)
    captured = wan_kernels.residual_capture(residual, cache_input)
    out = wan_kernels.residual_apply(cache_input, captured)
    q, k = wan_kernels.qk_rmsnorm_rope(out.bfloat16(), hidden.bfloat16(), weight, weight, cos, sin, 4, EPS)
    change = wan_kernels.rel_l1(out, x, 2) + wan_kernels.rel_l2(out, x, 4)
    return out, q, k, change


def test_fullgraph_compile_matches_eager(backend):
    torch._dynamo.reset()
    args = block_inputs()
    eager = _block_tail(*args)
    compiled = torch.compile(_block_tail, fullgraph=True)(*args)
    for c, e in zip(compiled, eager, strict=True):
        assert_matches(c, e, e.dtype)


def _sized_from_inputs(x, cache_input, cos, sin, weight):
    """Integer arguments computed from the inputs' sizes, which a dynamic compile traces as SymInts."""
    q, k = wan_kernels.qk_rmsnorm_rope(x, cache_input, weight, weight, cos, sin, x.shape[-1] // 16, EPS)
    return q, k, wan_kernels.rel_l1(x, cache_input, max(1, x.shape[1] // 3))


def test_dynamic_compile_takes_sizes_from_the_inputs(backend):
    torch._dynamo.reset()
    compiled = torch.compile(_sized_from_inputs, fullgraph=True, dynamic=True)
    for tokens in (7, 13):
        angles = randn((tokens, 1, 8), seed=tokens)
        args = (randn((2, tokens, 64), seed=1), randn((2, tokens, 64), seed=2), angles.cos(), angles.sin(),
                1 + randn((64,), seed=8, scale=0.1))
        for c, e in zip(compiled(*args), _sized_from_inputs(*args), strict=True):
            assert_matches(c, e, e.dtype)


@pytest.mark.parametrize("name", sorted(OP_ARGS))
def test_opcheck(name):
    """Schema, fake implementation and compile-time dispatch of each custom op (torch backend)."""
    torch.library.opcheck(getattr(torch.ops.wan_kernels, name), OP_ARGS[name](block_inputs()))


@pytest.mark.parametrize("name", ["gated_residual", "gated_residual_layernorm_modulate", "residual_apply",
                                  "residual_capture"])
def test_opcheck_with_transposed_inputs(backend, name):
    """Inputs laid out [L, B, C] in memory: every backend returns what the fake says (dense)."""
    def transposed(a):
        if isinstance(a, torch.Tensor) and a.dim() == 3 and a.shape[1] > 1:
            return a.transpose(0, 1).contiguous().transpose(0, 1)
        return a

    args = [transposed(a) for a in OP_ARGS[name](block_inputs())]
    torch.library.opcheck(getattr(torch.ops.wan_kernels, name), tuple(args))
