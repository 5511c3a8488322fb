"""What a LoRA file's tensor names mean: which DiT module each names, and which part of an update.

LoRAs for Wan are published under three naming schemes, all read here:

- the official module names (``blocks.0.self_attn.q``), usually behind ``diffusion_model.`` (the
  ComfyUI and LightX2V files, the Wan2.2-Lightning LoRAs);
- the diffusers names (``blocks.0.attn1.to_q``), usually behind ``transformer.``;
- the official names with their dots flattened to underscores behind ``lora_unet_`` (kohya-style
  trainers such as musubi-tuner: ``lora_unet_blocks_0_self_attn_q``), and the diffusers names so
  flattened (``lora_transformer_blocks_0_attn1_to_q``, as kohya's converters write them).

Each name ends in what the tensor is: the low-rank factors (``lora_down``/``lora_A`` and
``lora_up``/``lora_B``), their ``alpha``, the bias of peft's ``lora_B`` layer (``lora_B.bias``,
scaled as the factors are: peft adds ``lora_B(lora_A(x)) * alpha / rank``), or a whole-tensor
difference (``diff`` for a weight, ``diff_b`` for a bias, ``diff_m`` for a block's modulation),
which merges at the LoRA's strength alone.

Wan2.1 image-to-video LoRAs, which users apply to Wan2.2, also update that model's CLIP image
branch (``k_img``, ``v_img``, ``norm_k_img``, ``img_emb``), which no Wan2.2 DiT has;
``image_branch`` tells those modules apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DOWN, UP, UP_B, ALPHA = "down", "up", "up_b", "alpha"
DIFF, DIFF_B, DIFF_M = "diff", "diff_b", "diff_m"

# peft's own files name the modules of the model it wrapped behind this.
PEFT_PREFIX = "base_model.model."
# VideoX-Fun writes kohya's lora_unet_ with a second underscore; SimpleTuner's LyCORIS files a
# lycoris_ prefix; DiffSynth-Studio keeps its pipeline's pipe.dit. unless told to remove it.
_PREFIXES = (PEFT_PREFIX, "model.diffusion_model.", "diffusion_model.", "transformer.", "lora_unet__",
             "lora_unet_", "lora_transformer_", "lycoris_", "pipe.dit.")
_PARTS = {
    ".lora_down.weight": DOWN, ".lora_A.weight": DOWN, ".lora_A.default.weight": DOWN,
    ".lora_up.weight": UP, ".lora_B.weight": UP, ".lora_B.default.weight": UP,
    ".alpha": ALPHA,
    ".diff": DIFF,
    ".lora_B.bias": UP_B, ".lora_B.default.bias": UP_B,
    ".diff_b": DIFF_B,
    ".diff_m": DIFF_M,
}
# Name endings of adapters that are not a low-rank product, each with the trainer's name for it.
_OTHER_ADAPTERS = {
    ".dora_scale": "DoRA (weight-decomposed LoRA)", ".lora_magnitude_vector": "DoRA (weight-decomposed LoRA)",
    ".hada_w1_a": "LoHa", ".hada_w1_b": "LoHa", ".hada_w2_a": "LoHa", ".hada_w2_b": "LoHa",
    ".hada_t1": "LoHa", ".hada_t2": "LoHa",
    ".lokr_w1": "LoKr", ".lokr_w2": "LoKr", ".lokr_w1_a": "LoKr", ".lokr_w1_b": "LoKr",
    ".lokr_w2_a": "LoKr", ".lokr_w2_b": "LoKr", ".lokr_t2": "LoKr",
    ".lora_mid.weight": "LoCon with a Tucker core",
}
_TEXT_ENCODER = re.compile(r"^(lora_te\d?_|text_encoder[._]|te\d?[._])")

# diffusers' module names for the official ones, inside a block and at the top level.
_DIFFUSERS_BLOCK = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o", "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
    "attn2.norm_added_k": "cross_attn.norm_k_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
    "norm2": "norm3",  # diffusers' norm2 is the affine norm before the cross-attention
    "scale_shift_table": "modulation",
}
_DIFFUSERS_TOP = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
}
_OFFICIAL_BLOCK = {official: name for name, official in _DIFFUSERS_BLOCK.items()}
_OFFICIAL_TOP = {official: name for name, official in _DIFFUSERS_TOP.items()}
_BLOCK = re.compile(r"^(blocks\.\d+\.)(.+)$")
# Wan2.1's CLIP image branch under each naming scheme (official, diffusers, flattened).
_IMAGE_BRANCH = re.compile(r"(^|[._])(k_img|v_img|norm_k_img|img_emb|add_k_proj|add_v_proj|norm_added_k|"
                           r"image_embedder)([._]|$)")


@dataclass(frozen=True)
class LoraKey:
    """One tensor name of a LoRA file, split: ``module`` as the file names it (prefix removed) and
    ``part``, one of ``down``, ``up``, ``up_b``, ``alpha``, ``diff``, ``diff_b``, ``diff_m``."""

    module: str
    part: str


class KeyProblem(ValueError):
    """A tensor name that is not one of a LoRA for the Wan DiT; the message says why."""


def parse_key(key: str) -> LoraKey:
    """Split a LoRA tensor name into the module it updates and the part it holds (``KeyProblem``
    when the name belongs to another adapter kind, the text encoder, or nothing known)."""
    if _TEXT_ENCODER.match(key):
        raise KeyProblem("updates the text encoder; the runtime merges LoRAs into the DiT only")
    for ending, kind in _OTHER_ADAPTERS.items():
        if key.endswith(ending):
            raise KeyProblem(f"is part of a {kind} adapter; only LoRA (down/up/alpha) and diff "
                             "tensors are read")
    name = next((key[len(p):] for p in _PREFIXES if key.startswith(p)), key)
    for ending, part in _PARTS.items():
        if name.endswith(ending) and len(name) > len(ending):
            return LoraKey(name[: -len(ending)], part)
    raise KeyProblem("ends in none of " + ", ".join(sorted(set(_PARTS))))


def image_branch(module: str) -> bool:
    """Whether ``module`` (any naming scheme) is part of Wan2.1's CLIP image branch."""
    return _IMAGE_BRANCH.search(module) is not None


def diffusers_module(module: str) -> str:
    """The diffusers name of an official module (other names unchanged)."""
    block = _BLOCK.match(module)
    if block:
        return block.group(1) + _OFFICIAL_BLOCK.get(block.group(2), block.group(2))
    return _OFFICIAL_TOP.get(module, module)


def official_module(module: str) -> str:
    """The official name of a module named the diffusers way (other names unchanged)."""
    block = _BLOCK.match(module)
    if block:
        return block.group(1) + _DIFFUSERS_BLOCK.get(block.group(2), block.group(2))
    return _DIFFUSERS_TOP.get(module, module)


class ModuleNames:
    """Resolves the module names of a LoRA file to the names of one DiT's parameters."""

    def __init__(self, parameters: Iterable[str]) -> None:
        self.parameters = frozenset(parameters)
        parts = [name.split(".") for name in self.parameters]
        self._modules = {".".join(p[:i]) for p in parts for i in range(1, len(p) + 1)}
        # Where a flattened diffusers name is also a flattened official one, the official meaning holds.
        flat = {diffusers_module(name).replace(".", "_"): name for name in self._modules}
        self._flat = {**flat, **{name.replace(".", "_"): name for name in self._modules}}

    def resolve(self, module: str) -> str | None:
        """The official module (or parameter) name ``module`` denotes in this DiT, or None."""
        for name in (module, official_module(module), self._flat.get(module)):
            if name in self._modules:
                return name
        return None

    def target(self, module: str, part: str) -> str | None:
        """The parameter that ``part`` of the (resolved) ``module`` changes, or None if it has none."""
        if part in (DIFF_B, UP_B):
            name = f"{module}.bias"
        elif part == DIFF_M:
            name = f"{module}.modulation"
        elif part == DIFF and module in self.parameters:
            name = module  # a difference of a bare parameter, such as a block's modulation
        else:
            name = f"{module}.weight"
        return name if name in self.parameters else None
