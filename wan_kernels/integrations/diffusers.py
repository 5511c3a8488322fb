"""diffusers' ``WanTransformer3DModel`` on the fused ops: ``apply(transformer)``.

``apply`` gives every ``WanTransformerBlock`` of the model a forward that computes the block's
adaLN steps with ``wan_kernels`` ops instead of chains of elementwise torch ops. The arithmetic is
diffusers' own, op for op (see ``_fused_forward``): with the ``torch`` backend the output is bitwise
unchanged, and the fused backends differ only in float32 rounding order (the norm's sums, fused
multiply-adds). The
attention processors, projections and feed-forward are diffusers' modules, untouched.

The forward is set on each block instance, as diffusers' own hooks do, so the block keeps its class
and everything diffusers keys on class names (``compile_repeated_blocks``, ``_no_split_modules``)
still finds it. Call ``apply`` before registering diffusers hooks or caches on the model, and
before compiling it. Gradients flow through the ops (their references' backward), so a model
fine-tuned after ``apply`` trains as the original does.
"""

from __future__ import annotations

import functools

import torch

import wan_kernels

try:
    from diffusers.models.normalization import FP32LayerNorm
    from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock
except ImportError as err:  # pragma: no cover - exercised only where diffusers is absent
    raise ImportError(
        "wan_kernels.integrations.diffusers needs diffusers with the Wan transformer (pip install diffusers)"
    ) from err

__all__ = ["apply", "is_applied", "remove"]

_STREAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _fused_forward(
    self: WanTransformerBlock,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    rotary_emb: torch.Tensor,
) -> torch.Tensor:
    """``WanTransformerBlock.forward`` with its norm, modulation and gated residuals as fused ops.

    Step by step against diffusers' forward: ``norm1(h.float()) * (1 + scale) + shift`` is a float32
    LayerNorm without rounding before the modulation, i.e. ``layernorm_modulate`` with
    ``round_to_input=False``; ``h.float() + y * gate`` is ``gated_residual``; both are rounded to the
    stream's dtype as diffusers' ``type_as`` does.
    """
    if hidden_states.dtype not in _STREAM_DTYPES:
        raise ValueError(f"wan_kernels.integrations.diffusers: the fused blocks run float32, bfloat16 or "
                         f"float16 models, this one runs {hidden_states.dtype}; call "
                         "wan_kernels.integrations.diffusers.remove(transformer) to run it so")
    if temb.ndim == 4:
        # Wan2.2 ti2v: temb [B, L, 6, C] gives per-token rows [B, L, C].
        rows = (self.scale_shift_table.unsqueeze(0) + temb.float()).unbind(2)
    else:
        rows = (self.scale_shift_table + temb.float()).chunk(6, dim=1)
    # One timestep for the whole batch, which diffusers' arithmetic broadcasts: the ops take
    # the rows expanded (stride 0, no copy).
    batch = hidden_states.size(0)
    shift, scale, gate, c_shift, c_scale, c_gate = (row.expand(batch, *row.shape[1:]) for row in rows)

    # 1. Self-attention.
    norm_hidden_states = wan_kernels.layernorm_modulate(
        hidden_states, shift, scale, self.norm1.eps, round_to_input=False, out_dtype=hidden_states.dtype
    )
    attn_output = self.attn1(norm_hidden_states, None, None, rotary_emb)
    hidden_states = wan_kernels.gated_residual(hidden_states, attn_output, gate)

    # 2. Cross-attention, ungated.
    norm_hidden_states = self.norm2(hidden_states.float()).type_as(hidden_states)
    attn_output = self.attn2(norm_hidden_states, encoder_hidden_states, None, None)
    if hidden_states.dtype == torch.float32:
        # A unit gate is exact (y * 1 == y), so the add fuses with the feed-forward's norm; on a
        # float32 stream rounding the sum to the stream's dtype changes nothing either.
        unit_gate = c_gate.new_ones((hidden_states.size(0), 1, hidden_states.size(2)))
        hidden_states, norm_hidden_states = wan_kernels.gated_residual_layernorm_modulate(
            hidden_states, attn_output, unit_gate, c_shift, c_scale, self.norm3.eps
        )
    else:
        # A low-precision stream rounds the sum before the norm, which the fused op does not.
        hidden_states = hidden_states + attn_output
        dtype = hidden_states.dtype
        norm_hidden_states = wan_kernels.layernorm_modulate(
            hidden_states, c_shift, c_scale, self.norm3.eps, round_to_input=False, out_dtype=dtype
        )

    # 3. Feed-forward.
    ff_output = self.ffn(norm_hidden_states)
    return wan_kernels.gated_residual(hidden_states, ff_output, c_gate)


def _blocks(transformer: object) -> list[WanTransformerBlock]:
    if not isinstance(transformer, WanTransformer3DModel):
        raise TypeError(
            "wan_kernels.integrations.diffusers expects a diffusers WanTransformer3DModel, got "
            f"{type(transformer).__module__}.{type(transformer).__qualname__}"
        )
    # Exactly this class: a subclass may compute something else in its forward.
    blocks = [m for m in transformer.modules() if type(m) is WanTransformerBlock]
    for block in blocks:
        for name in ("norm1", "norm3"):
            norm = getattr(block, name)
            if type(norm) is not FP32LayerNorm or norm.elementwise_affine:
                raise TypeError(f"WanTransformerBlock.{name} is {norm!r}; the fused forward expects an "
                                "FP32LayerNorm without affine weights (an unknown diffusers version?)")
    return blocks


def _applied(block: WanTransformerBlock) -> bool:
    forward = vars(block).get("forward")
    return isinstance(forward, functools.partial) and forward.func is _fused_forward


def is_applied(transformer: WanTransformer3DModel) -> bool:
    """Whether ``apply`` has patched every block of ``transformer`` and nothing (a diffusers hook or
    cache) has wrapped the blocks since."""
    blocks = _blocks(transformer)
    return bool(blocks) and all(_applied(b) for b in blocks)


def apply(transformer: WanTransformer3DModel) -> WanTransformer3DModel:
    """Run the blocks of a diffusers ``WanTransformer3DModel`` on the fused ``wan_kernels`` ops.

    Patches ``transformer`` in place and returns it; applying twice changes nothing. The backend is
    chosen per call as for any op (``wan_kernels.set_backend``). Raises ``TypeError`` for any other
    model, and ``ValueError`` for a block whose forward something else (a diffusers hook, a cache)
    has already replaced: apply first, then register those.
    """
    blocks = _blocks(transformer)
    for block in blocks:
        if "forward" in vars(block) and not _applied(block):
            raise ValueError(
                "a WanTransformerBlock's forward is already replaced (a diffusers hook or cache?); call "
                "wan_kernels.integrations.diffusers.apply before registering hooks on the model"
            )
    for block in blocks:
        if not _applied(block):
            # A partial, not a bound method: pickle finds it again (torch.save of the whole model).
            block.forward = functools.partial(_fused_forward, block)
    # Marks the model (copies included) for remove(): a wrapper found later may hide our forward.
    transformer._wan_kernels_applied = True
    return transformer


def remove(transformer: WanTransformer3DModel) -> WanTransformer3DModel:
    """Undo ``apply``: the blocks run diffusers' own forward again. Returns ``transformer``.

    Raises ``ValueError`` when, since ``apply``, something (a diffusers hook or cache) has wrapped
    a block's forward: the fused forward may be inside it, out of reach; remove those first. On a
    model ``apply`` never patched it changes nothing.
    """
    blocks = _blocks(transformer)
    if not getattr(transformer, "_wan_kernels_applied", False):
        return transformer
    if any("forward" in vars(block) and not _applied(block) for block in blocks):
        raise ValueError(
            "a WanTransformerBlock's forward is wrapped by something else (a diffusers hook or cache?); "
            "remove it first (e.g. transformer.disable_cache()), then call "
            "wan_kernels.integrations.diffusers.remove"
        )
    for block in blocks:
        if _applied(block):
            del block.forward
    del transformer._wan_kernels_applied
    return transformer
