"""Random LoRAs for the tiny DiTs, written under each naming scheme the runtime reads.

The diffusers names come from diffusers' own single-file converter, so a wrong entry in the
runtime's name table cannot hide in a table of the tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

from wan_runtime.models import WanModel

BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                 "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
# Top-level linears, which diffusers' converter reads without an alpha.
TOP_LINEARS = ("time_projection.1", "head.head", "text_embedding.0", "text_embedding.2",
               "time_embedding.0", "time_embedding.2")


def parameter_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The DiT's parameter names and shapes, read from its folder's headers."""
    with torch.device("meta"):
        model = WanModel(WanModel.read_checkpoint(Path(folder))[0])
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def random_lora(shapes: dict[str, tuple[int, ...]], rank: int = 4, seed: int = 0, top: bool = True,
                biases: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """Parts by official module name: ``down``/``up`` for every block linear (with an ``alpha``
    of 2*rank, so the scale is not 1) and, with ``top``, the top-level linears (no alpha); a
    ``diff_b`` on the block linears' biases with ``biases``."""
    g = torch.Generator().manual_seed(seed)
    blocks = sorted({int(name.split(".")[1]) for name in shapes if name.startswith("blocks.")})
    modules = [f"blocks.{i}.{m}" for i in blocks for m in BLOCK_LINEARS] + (list(TOP_LINEARS) if top else [])
    lora = {}
    for module in modules:
        out, inp = shapes[f"{module}.weight"]
        parts = {"down": torch.randn(rank, inp, generator=g) * 0.2,
                 "up": torch.randn(out, rank, generator=g) * 0.2}
        if module.startswith("blocks."):
            parts["alpha"] = torch.tensor(2.0 * rank)
            if biases:
                parts["diff_b"] = torch.randn(out, generator=g) * 0.05
        lora[module] = parts
    return lora


def write_official(path: Path, lora: dict, prefix: str = "diffusion_model.", down: str = "lora_down",
                   up: str = "lora_up") -> Path:
    """The official module names (ComfyUI/LightX2V files: ``diffusion_model.`` + lora_down/up)."""
    names = {"down": f"{down}.weight", "up": f"{up}.weight", "alpha": "alpha", "diff": "diff",
             "diff_b": "diff_b", "diff_m": "diff_m"}
    tensors = {f"{prefix}{module}.{names[part]}": t
               for module, parts in lora.items() for part, t in parts.items()}
    save_file(tensors, str(path))
    return path


def write_musubi(path: Path, lora: dict, prefix: str = "lora_unet_", diffusers: bool = False) -> Path:
    """kohya/musubi-tuner names: ``lora_unet_`` + the module name with its dots as underscores
    (VideoX-Fun's ``lora_unet__``, SimpleTuner's ``lycoris_`` in place of the prefix); with
    ``diffusers``, diffusers' module names so flattened, as kohya's converters write them."""
    names = {"down": "lora_down.weight", "up": "lora_up.weight", "alpha": "alpha"}
    modules = diffusers_names(list(lora)) if diffusers else {module: module for module in lora}
    tensors = {f"{prefix}{modules[module].replace('.', '_')}.{names[part]}": t
               for module, parts in lora.items() for part, t in parts.items()}
    save_file(tensors, str(path))
    return path


def diffusers_names(modules: list[str]) -> dict[str, str]:
    """Each official module's diffusers name, by diffusers' checkpoint converter."""
    converted = convert_wan_transformer_to_diffusers({f"{m}.weight": torch.zeros(1) for m in modules})
    assert len(converted) == len(modules)
    # The converter renames substrings, so the names come back in the order they went in.
    return {m: name.removesuffix(".weight") for m, name in zip(modules, converted, strict=True)}


def write_diffusers(path: Path, lora: dict) -> Path:
    """diffusers names behind ``transformer.`` with lora_A/lora_B and no alpha (the alpha folded
    into the down factor, as diffusers' trainers save), biases as ``lora_B.bias``."""
    names = diffusers_names(list(lora))
    tensors = {}
    for module, parts in lora.items():
        scale = parts["alpha"].item() / parts["down"].shape[0] if "alpha" in parts else 1.0
        base = f"transformer.{names[module]}"
        tensors[f"{base}.lora_A.weight"] = parts["down"] * scale
        tensors[f"{base}.lora_B.weight"] = parts["up"]
        if "diff_b" in parts:
            tensors[f"{base}.lora_B.bias"] = parts["diff_b"]
    save_file(tensors, str(path))
    return path
