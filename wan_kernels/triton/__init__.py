"""The ``triton`` backend: one module per op family, each holding its kernels, launchers and
registration. Importing this package registers them; it needs Triton and either a CUDA device or
Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""

from wan_kernels.triton import gated_residual, layernorm_modulate, qk_rmsnorm_rope, rel_error, residual_cache

__all__ = ["gated_residual", "layernorm_modulate", "qk_rmsnorm_rope", "rel_error", "residual_cache"]
