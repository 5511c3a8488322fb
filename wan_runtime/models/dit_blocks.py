"""Layers of the Wan DiT, with the official parameter names.

Precision follows the official model under bfloat16 autocast: matrix products run in the weights'
dtype (the compute dtype), while norm statistics, modulation, gates and the residual stream stay in
float32. Norm and modulation parameters are kept in float32 (``WanModel.float32_parameters``)
unless the whole model is converted; the layers the official model runs under float32 autocast
(time MLP, head, the affine norm) then still compute in float32 from the rounded weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wan_kernels.reference import gated_residual, layer_norm, modulate, rms_norm, rope_interleaved
from wan_runtime.models.attention import attention


def per_token(table: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Rows of a per-timestep table for every token.

    ``table`` is [K, C]. Without ``index`` row ``b`` belongs to sample ``b`` and the result is
    [B, 1, C], broadcast over tokens; with ``index`` [B, L] the result is ``table[index]``.
    """
    return table[:, None] if index is None else table[index]


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in the layer's dtype, as autocast would cast the input."""
    return layer(x.to(layer.weight.dtype))


def linear_float32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed in float32 whatever the weights' dtype (official float32 autocast)."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (official ``WanRMSNorm``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class AffineLayerNorm(nn.Module):
    """LayerNorm with weight and bias, computed in float32 (official ``norm3``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight.float(), self.bias.float(), self.eps)


class Attention(nn.Module):
    """Multi-head attention with q/k RMSNorm over the full width; rotary embedding when given."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        source: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Queries from ``x`` [B, L, C], keys and values from ``source`` [B, S, C]."""
        heads = (self.num_heads, -1)
        q = self.norm_q(linear(self.q, x)).unflatten(-1, heads)
        k = self.norm_k(linear(self.k, source)).unflatten(-1, heads)
        v = linear(self.v, source).unflatten(-1, heads)
        if rope is not None:
            q, k = rope_interleaved(q, *rope), rope_interleaved(k, *rope)
        out = attention(q.to(v.dtype), k.to(v.dtype), v)
        return linear(self.o, out.flatten(2))


class DiTBlock(nn.Module):
    """Self-attention, cross-attention to the text, and a GELU feed-forward, each adaLN-modulated."""

    def __init__(
        self, dim: int, ffn_dim: int, num_heads: int, qk_norm: bool, cross_attn_norm: bool, eps: float
    ) -> None:
        super().__init__()
        self.eps = eps
        self.self_attn = Attention(dim, num_heads, qk_norm, eps)
        self.norm3 = AffineLayerNorm(dim, eps) if cross_attn_norm else nn.Identity()
        self.cross_attn = Attention(dim, num_heads, qk_norm, eps)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim)
        )
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        time_index: torch.Tensor | None,
        context: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """``x`` [B, L, C]; ``time`` [K, 6, C] float32 time projection rows (see ``per_token``)."""
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (
            per_token(row, time_index) for row in (self.modulation[0] + time).unbind(1)
        )
        hidden = modulate(layer_norm(x, None, None, self.eps), shift, scale)
        x = gated_residual(x, self.self_attn(hidden, hidden, rope), gate)
        x = x + self.cross_attn(self.norm3(x), context)
        hidden = modulate(layer_norm(x, None, None, self.eps), ffn_shift, ffn_scale)
        return gated_residual(x, self.ffn(hidden.to(self.ffn[0].weight.dtype)), ffn_gate)


class Head(nn.Module):
    """Final modulated norm and projection to ``prod(patch) * out_dim`` channels per token."""

    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.zeros(1, 2, dim))

    def forward(
        self, x: torch.Tensor, time_embed: torch.Tensor, time_index: torch.Tensor | None
    ) -> torch.Tensor:
        """``time_embed`` [K, C] float32: the time MLP output, before the block projection."""
        shift, scale = (
            per_token(row, time_index) for row in (self.modulation[0] + time_embed[:, None]).unbind(1)
        )
        return linear_float32(self.head, modulate(layer_norm(x, None, None, self.eps), shift, scale))
