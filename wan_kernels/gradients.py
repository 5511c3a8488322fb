"""Backward of the custom ops: the vector-Jacobian product of the op's plain-torch reference.

The fused kernels are forward-only; a model fine-tuned through them (a LoRA on a diffusers model
after ``integrations.diffusers.apply``) still needs gradients. The backward recomputes the
reference from the saved inputs under ``torch.func.vjp``, so the gradients are the reference's
exactly, at the reference's cost and memory (plain torch, unfused), and traceable by
``torch.compile``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def _setup_context(ctx: object, inputs: tuple, output: object) -> None:
    tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
    # A tensor made under inference_mode (a cached activation beside a trained LoRA) cannot be saved
    # for backward, and the reference's own autograd would not need to save it where it only adds.
    # It has no version counter to check and outside inference mode it cannot change in place, so
    # the context holds it as it is.
    ctx.save_for_backward(*(None if t.is_inference() else t for t in tensors))
    ctx.inference_tensors = [t if t.is_inference() else None for t in tensors]
    ctx.constants = tuple(None if isinstance(a, torch.Tensor) else a for a in inputs)


def _backward(reference: Callable, ctx: object, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    held = zip(ctx.saved_tensors, ctx.inference_tensors, strict=True)
    saved = iter(s if s is not None else t for s, t in held)
    args = [next(saved) if c is None else c for c in ctx.constants]
    # The inputs to differentiate: tensors that need a gradient (not, say, RoPE tables).
    wrt = [i for i, c in enumerate(ctx.constants) if c is None and ctx.needs_input_grad[i]]

    def of_inputs(*tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        full = list(args)
        for i, t in zip(wrt, tensors, strict=True):
            full[i] = t
        return reference(*full)

    out, vjp = torch.func.vjp(of_inputs, *(args[i] for i in wrt))
    found = dict(zip(wrt, vjp(grads if isinstance(out, tuple) else grads[0]), strict=True))
    return tuple(found.get(i) for i in range(len(args)))


def register_reference_backward(op: object, reference: Callable) -> None:
    """Give custom op ``op`` the backward of ``reference`` (same arguments in the same order)."""
    torch.library.register_autograd(op, functools.partial(_backward, reference), setup_context=_setup_context)
