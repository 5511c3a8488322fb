"""Layers of the Wan DiT, with the official parameter names.

Precision follows the official model under bfloat16 autocast: matrix products run in the weights'
dtype (the compute dtype), while norm statistics, modulation, gates and the residual stream stay in
float32. Norm and modulation parameters are kept in float32 (``WanModel.float32_parameters``)
unless the whole model is converted; the layers the official model runs under float32 autocast
(time MLP, head, the affine norm) then still compute in float32 from the rounded weights.

The norm, modulation, gate and residual steps run as ``wan_kernels`` ops, whose arithmetic is that
of ``wan_kernels.reference``: with the ``torch`` backend the blocks compute exactly what the plain
composition computes. ``wan_kernels.set_backend("torch")`` (or ``WAN_KERNELS_BACKEND=torch``)
switches the fused kernels off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import wan_kernels
from wan_kernels.reference import layer_norm, rms_norm, rope_interleaved
from wan_runtime.distributed.ulysses import SequenceShard
from wan_runtime.models.attention import attention
from wan_runtime.models.fp8_weights import compute_dtype


def per_token(table: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Rows of a per-timestep table for every token.

    ``table`` is [K, C]. Without ``index`` row ``b`` belongs to sample ``b`` and the result is
    [B, 1, C], broadcast over tokens; with ``index`` [B, L] the result is ``table[index]``.
    """
    return table[:, None] if index is None else table[index]


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in the layer's compute dtype, as autocast would cast the input."""
    return layer(x.to(compute_dtype(layer)))


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
        shard: SequenceShard | None = None,
    ) -> torch.Tensor:
        """Queries from ``x`` [B, L, C], keys and values from ``source`` [B, S, C]; with ``shard``
        (self-attention under sequence parallelism) both are this rank's slice of the sequence."""
        heads = (self.num_heads, -1)
        q, k = linear(self.q, x), linear(self.k, source)
        v = linear(self.v, source).unflatten(-1, heads)
        if rope is not None and self._fused_qk_norm():
            q, k = wan_kernels.qk_rmsnorm_rope(
                q, k, self.norm_q.weight, self.norm_k.weight, *rope, self.num_heads, self.norm_q.eps
            )
        else:
            q, k = self.norm_q(q).unflatten(-1, heads), self.norm_k(k).unflatten(-1, heads)
            if rope is not None:
                q, k = rope_interleaved(q, *rope), rope_interleaved(k, *rope)
        q, k = q.to(v.dtype), k.to(v.dtype)
        if shard is not None:
            q, k, v = shard.to_heads(q, k, v)
            k, v = shard.real_keys(k), shard.real_keys(v)
        out = attention(q, k, v)
        if shard is not None:
            out = shard.to_tokens(out)
        return linear(self.o, out.flatten(2))

    def _fused_qk_norm(self) -> bool:
        # qk_rmsnorm_rope multiplies by float32 weights. Weights converted to the compute dtype
        # (convert_model_dtype) round that product to it, which only the unfused composition does.
        return isinstance(self.norm_q, RMSNorm) and self.norm_q.weight.dtype == torch.float32 \
            and self.norm_k.weight.dtype == torch.float32


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
        shard: SequenceShard | None = None,
    ) -> torch.Tensor:
        """``x`` [B, L, C]; ``time`` [K, 6, C] float32 time projection rows (see ``per_token``);
        ``shard``: the sequence's split under sequence parallelism (``x`` is then a slice)."""
        rows = (self.modulation[0] + time).unbind(1)

        # Per-token modulation is a float32 [B, L, C] table per row (1.6 GB each at 80k tokens of
        # 5120): each is made as its op is called, after the sublayer before it has run, so that
        # at most two are alive at once.
        def modulation(row: int) -> torch.Tensor:
            return per_token(rows[row], time_index)

        dtype = compute_dtype(self.ffn[0])
        hidden = wan_kernels.layernorm_modulate(x, modulation(0), modulation(1), self.eps, out_dtype=dtype)
        # The first block's input is in the compute dtype; the residual stream is float32 from here.
        x = wan_kernels.gated_residual(x.float(), self.self_attn(hidden, hidden, rope, shard), modulation(2))
        # The cross-attention adds ungated; a unit gate is exact (y * 1 == y) and lets the add fuse
        # with the feed-forward's norm.
        unit_gate = rows[2].new_ones((x.size(0), 1, x.size(2)))
        attended = self.cross_attn(self.norm3(x), context)
        x, hidden = wan_kernels.gated_residual_layernorm_modulate(
            x, attended, unit_gate, modulation(3), modulation(4), self.eps, dtype
        )
        return wan_kernels.gated_residual(x, self.ffn(hidden), modulation(5))

    def modulated_norm(
        self, x: torch.Tensor, time: torch.Tensor, time_index: torch.Tensor | None
    ) -> torch.Tensor:
        """The self-attention's modulated norm of ``x`` (``forward``'s first step) in float32:
        TeaCache's signal, taken from the first block."""
        rows = (self.modulation[0, :2] + time[:, :2]).unbind(1)
        shift, scale = (per_token(row, time_index) for row in rows)
        return wan_kernels.layernorm_modulate(x, shift, scale, self.eps)


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
        return linear_float32(self.head, wan_kernels.layernorm_modulate(x, shift, scale, self.eps))
