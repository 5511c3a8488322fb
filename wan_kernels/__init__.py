"""Fused ops for diffusion-transformer blocks, each with a plain-torch reference.

``wan_kernels.reference`` holds the reference of every op; it knows nothing of any particular
model, so other DiT codebases can use it as is. The ops below check their inputs and run the
selected backend (``cuda``, ``triton``, ``cpp`` or ``torch``; see ``wan_kernels.dispatch``) as
``torch.library`` custom ops, so ``torch.compile`` traces them without graph breaks.
``wan_kernels.integrations`` runs other libraries' models on them
(``wan_kernels.integrations.diffusers.apply(transformer)``).
"""

from wan_kernels import reference
from wan_kernels.dispatch import available_backends, backend_for, get_backend, set_backend
from wan_kernels.ops import (
    gated_residual,
    gated_residual_layernorm_modulate,
    layernorm_modulate,
    qk_rmsnorm_rope,
    rel_l1,
    rel_l2,
    residual_apply,
    residual_capture,
)

__all__ = [
    "available_backends",
    "backend_for",
    "gated_residual",
    "gated_residual_layernorm_modulate",
    "get_backend",
    "layernorm_modulate",
    "qk_rmsnorm_rope",
    "reference",
    "rel_l1",
    "rel_l2",
    "residual_apply",
    "residual_capture",
    "set_backend",
]
