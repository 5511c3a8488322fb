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
    """``x + y * gate`` with the product and sum in float32, returned in ``x``'s dtype (the residual
    stream's: float32, or bfloat16/float16 in models that keep the stream there, rounded once)."""
    return (x.float() + y.float() * gate).to(x.dtype)


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on adjacent pairs ``(x[2i], x[2i+1])`` of the last dimension.

    ``x`` is [B, L, H, D]; ``cos``/``sin`` are float32 tables broadcasting against [B, L, H, D/2]
    (the op ``qk_rmsnorm_rope`` takes exactly a contiguous [L, 1, D/2], shared by the batch).
    Computed in float32; returns float32.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)


def layernorm_modulate(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    round_to_input: bool = True,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """adaLN input: LayerNorm without affine weights, then ``* (1 + scale) + shift``.

    With ``round_to_input`` (the default, and what the official Wan model computes) the normalised
    value is rounded to ``x.dtype`` before the modulation; without it the float32 normalised value
    is modulated directly, which is more accurate for low-precision ``x``. The modulation is in
    float32 and the result is cast once to ``out_dtype``.
    """
    if round_to_input:
        normed = layer_norm(x, None, None, eps)
    else:
        normed = F.layer_norm(x.float(), x.shape[-1:], eps=eps)
    return modulate(normed, shift, scale).to(out_dtype)


def gated_residual_layernorm_modulate(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gated_residual`` then ``layernorm_modulate`` of its result: (new residual, modulated input).

    ``x`` is the float32 residual stream (the op refuses another dtype), so the new residual is
    float32 and rounding the normalised value to its dtype changes nothing.
    """
    residual = gated_residual(x, y, gate)
    return residual, layernorm_modulate(residual, shift, scale, eps, out_dtype=out_dtype)


def _sampled_tokens(a: torch.Tensor, b: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Any stride past the last token samples the first alone; clamped, since torch's slicing
    # overflows on strides near INT64_MAX.
    stride = min(stride, max(a.shape[-2], 1))
    return a[..., ::stride, :].float(), b[..., ::stride, :].float()


def rel_l1(a: torch.Tensor, b: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``sum|a - b| / sum|b|`` over every ``stride``-th token (second-to-last dim), in float32."""
    a32, b32 = _sampled_tokens(a, b, stride)
    return (a32 - b32).abs().sum() / b32.abs().sum()


def rel_l2(a: torch.Tensor, b: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``|a - b|_2 / |b|_2`` over every ``stride``-th token (second-to-last dim), in float32."""
    a32, b32 = _sampled_tokens(a, b, stride)
    return torch.sqrt((a32 - b32).square().sum() / b32.square().sum())


def residual_apply(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``x + residual`` in float32: a step cache reusing a captured residual."""
    return x.float() + residual.float()


def residual_capture(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """``out - inp`` in float32: the residual a step cache captures."""
    return out.float() - inp.float()


def qk_rmsnorm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    weight_q: torch.Tensor,
    weight_k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_heads: int,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of ``q`` and ``k`` [B, L, C] over the full width, then the interleaved rotary embedding.

    Per head of ``C / num_heads`` channels; ``cos``/``sin`` as in ``rope_interleaved``. Returns
    [B, L, H, D] in the input's dtype (the attention's dtype), rounded once from float32.
    """

    def one(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        normed = rms_norm(x, weight, eps).unflatten(-1, (num_heads, -1))
        return rope_interleaved(normed, cos, sin).to(x.dtype)

    return one(q, weight_q), one(k, weight_k)
