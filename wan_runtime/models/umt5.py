"""The umT5 encoder network: transformers' ``UMT5EncoderModel`` filled with the official weights.

With eager attention it computes what the official ``T5Encoder`` computes, operation for
operation: unscaled attention with a per-block relative position bias (bidirectional, 32 buckets,
max distance 128), float32 softmax and RMS norm statistics, gated tanh-GELU feed-forward. The
parity tests hold it to the official encoder in float32 and bfloat16.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import UMT5Config, UMT5EncoderModel

from wan_runtime.models.t5_checkpoint import T5Sizes

_BLOCK_NAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def umt5_config(sizes: T5Sizes) -> UMT5Config:
    """The transformers config of an encoder with these sizes."""
    return UMT5Config(
        vocab_size=sizes.vocab,
        d_model=sizes.dim,
        d_kv=sizes.dim_attn // sizes.num_heads,
        d_ff=sizes.dim_ffn,
        num_layers=sizes.num_layers,
        num_heads=sizes.num_heads,
        relative_attention_num_buckets=sizes.num_buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        # Eager gives the official numbers exactly; the sdpa kernels sum scores and bias in
        # another order and drift from the official bfloat16 output by about 1e-2 relative.
        attn_implementation="eager",
    )


def transformers_name(official: str) -> str:
    """The ``UMT5EncoderModel`` parameter name of an official ``T5Encoder`` key."""
    if official == "token_embedding.weight":
        return "shared.weight"
    if official == "norm.weight":
        return "encoder.final_layer_norm.weight"
    _, index, rest = official.split(".", 2)
    return f"encoder.block.{index}.{_BLOCK_NAMES[rest]}"


def meta_encoder(sizes: T5Sizes) -> UMT5EncoderModel:
    """The encoder of ``sizes`` on the meta device, float32 (what loading fills)."""
    with torch.device("meta"):
        return UMT5EncoderModel(umt5_config(sizes))


def build_encoder(
    state: dict[str, torch.Tensor], sizes: T5Sizes, device: torch.device | str, dtype: torch.dtype
) -> UMT5EncoderModel:
    """An inference-mode encoder holding ``state`` (checked official keys) in ``dtype`` on ``device``.

    Tensors are popped from ``state`` one at a time into a model built on the meta device, so peak
    memory is the model plus one tensor; on the CPU in the file's dtype the memory-mapped tensors
    are used as is. ``state`` is left empty.
    """
    model = meta_encoder(sizes)
    for name in list(state):
        value = state.pop(name).to(device=device, dtype=dtype)
        owner, _, leaf = transformers_name(name).rpartition(".")
        model.get_submodule(owner)._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    # The stack's embedding is the same table as ``shared``; point it at the loaded one.
    model.encoder.embed_tokens = model.shared
    return model.eval()
