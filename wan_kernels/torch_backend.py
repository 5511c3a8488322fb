"""The ``torch`` backend: the plain-torch references, for any device torch runs on."""

from __future__ import annotations

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

for _op in OPS:
    register("torch", _op)(getattr(reference, _op))
