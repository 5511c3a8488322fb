"""Fused ops for diffusion-transformer blocks, each with a plain-torch reference.

``wan_kernels.reference`` holds the reference of every op; it knows nothing of any particular
model, so other DiT codebases can use it as is.
"""

from wan_kernels import reference

__all__ = ["reference"]
