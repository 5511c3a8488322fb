"""Gradients through the ops: every backend's backward is the vector-Jacobian product of the op's
reference (``wan_kernels.gradients``), eager and under ``torch.compile``."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import OP_ARGS, block_inputs, randn
from wan_kernels import reference


def _leaves(args: tuple) -> list:
    return [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]


def _grads(fn, args: tuple, seed: int = 11) -> list[torch.Tensor]:
    """Gradients of ``fn(*args)`` against seeded random cotangents, for each tensor argument."""
    leaves = _leaves(args)
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    cotangents = [randn(tuple(o.shape), o.dtype, seed=seed + i) for i, o in enumerate(outs)]
    tensors = [a for a in leaves if isinstance(a, torch.Tensor)]
    return list(torch.autograd.grad(outs, tensors, cotangents))


@pytest.mark.parametrize("name", sorted(OP_ARGS))
def test_gradients_are_the_references(backend, name):
    args = OP_ARGS[name](block_inputs())
    ours = _grads(getattr(torch.ops.wan_kernels, name), args)
    expected = _grads(getattr(reference, name), args)
    assert len(ours) == len(expected)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _block(x, y, gate, shift, scale, cache_input, cos, sin, weight):
    residual, hidden = wan_kernels.gated_residual_layernorm_modulate(x, y, gate, shift, scale, 1e-6)
    q, k = wan_kernels.qk_rmsnorm_rope(hidden.to(y.dtype), y, weight, weight, cos, sin, 4, 1e-6)
    change = wan_kernels.rel_l1(k.flatten(-2), cache_input)
    return wan_kernels.gated_residual(residual, q.flatten(-2), gate), change


def test_compiled_backward_matches_eager(backend):
    """A module's parameters require grad even in inference code: compiling must not fail on them.
    In float32: Inductor keeps a backward's bfloat16 intermediates in float32, so bfloat16 gradients
    differ from eager's by bfloat16 roundings."""
    torch._dynamo.reset()
    args = tuple(a.float() for a in block_inputs())
    compiled = _grads(torch.compile(_block, fullgraph=True), args)
    for got, want in zip(compiled, _grads(_block, args), strict=True):
        torch.testing.assert_close(got, want)


def test_gradients_when_only_some_inputs_need_them():
    q, _, _, _, _, _, cos, sin, weight = block_inputs()
    q, weight = q.requires_grad_(), weight.requires_grad_()
    out = wan_kernels.qk_rmsnorm_rope(q, q.detach(), weight, weight.detach(), cos, sin, 4, 1e-6)[0]
    grads = torch.autograd.grad(out.sum(), (q, weight))
    expected = torch.autograd.grad(reference.qk_rmsnorm_rope(q, q.detach(), weight, weight.detach(), cos, sin,
                                                             4, 1e-6)[0].sum(), (q, weight))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(OP_ARGS))
def test_inputs_made_in_inference_mode_beside_ones_that_need_gradients(backend, name):
    """A cached activation made under inference_mode, beside a trained input: torch refuses to save
    an inference tensor for backward, and the reference's autograd gets by without saving it where
    it only adds; the op's backward must get by too, with the reference's gradients."""
    args = OP_ARGS[name](block_inputs())
    first = next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
    with torch.inference_mode():
        frozen = args[first].clone()
    trained = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and i != first]

    def grads(fn):
        leaves = [a.detach().clone().requires_grad_() if i in trained else a for i, a in enumerate(args)]
        leaves[first] = frozen
        out = fn(*leaves)
        total = sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,)))
        return torch.autograd.grad(total, [leaves[i] for i in trained])

    for got, want in zip(grads(getattr(torch.ops.wan_kernels, name)), grads(getattr(reference, name)),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
