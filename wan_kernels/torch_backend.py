"""The ``torch`` backend: the plain-torch references, for any device torch runs on."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from wan_kernels import reference
from wan_kernels.dispatch import register

OPS = (
    "layernorm_modulate",
    "gated_residual",
    "gated_residual_layernorm_modulate",
    "rel_l1",
    "rel_l2",
    "residual_apply",
    "residual_capture",
    "qk_rmsnorm_rope",
)


def _dense_outputs(fn: Callable) -> Callable:
    """``fn`` with contiguous outputs: a reference keeps its inputs' layout (a transposed input gives
    a transposed result), while the ops, like their fake implementations, return dense tensors."""
    @functools.wraps(fn)
    def run(*args: object) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = fn(*args)
        return tuple(t.contiguous() for t in out) if isinstance(out, tuple) else out.contiguous()

    return run


for _op in OPS:
    register("torch", _op)(_dense_outputs(getattr(reference, _op)))
