"""Plain-torch references of the DiT block ops.

Each function is the exact arithmetic a fused kernel must reproduce, including where it computes
in float32 and where it rounds back to the input's dtype, because those roundings are part of the
numerics of the models that use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``x / rms(x) * weight`` over the last dimension.

    Statistics are computed in float32; the normalised value is rounded to ``x.dtype`` before the
    weight is applied, so a bfloat16 input times a float32 weight gives a float32 result.
    """
    x32 = x.float()
    normed = (x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)).type_as(x)
    return normed if weight is None else normed * weight


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """LayerNorm over the last dimension computed in float32, rounded back to ``x.dtype``."""
    return F.layer_norm(x.float(), x.shape[-1:], weight, bias, eps).type_as(x)


def modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``normed * (1 + scale) + shift`` in float32.

    ``shift`` and ``scale`` broadcast against ``normed`` ([B, 1, C] per sample or [B, L, C] per
    token).
    """
    return normed.float() * (1 + scale) + shift


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + y * gate`` with the product and sum in float32 (the residual stream's precision)."""
    return x + y.float() * gate


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on adjacent pairs ``(x[2i], x[2i+1])`` of the last dimension.

    ``x`` is [B, L, H, D]; ``cos``/``sin`` are [L, 1, D/2] (or broadcastable) float32 tables.
    Computed in float32; returns float32.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)
