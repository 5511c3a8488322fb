"""Tiny random DiT folders (``config.json`` + safetensors) in the official layout.

Weights are random but non-degenerate: the official init zeroes the head, which would make every
output 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from wan_runtime.models.dit import WanModel
from wan_runtime.models.dit_config import DiTConfig
from wan_runtime.models.safetensors_checkpoint import INDEX_FILE, SINGLE_FILE
from wan_runtime.tiny_checkpoints.files import atomic_write, write_safetensors

TINY_I2V = DiTConfig(
    model_type="i2v", in_dim=36, out_dim=16, dim=256, ffn_dim=512, num_heads=2, num_layers=2,
    freq_dim=256,
)
TINY_TI2V = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=256, ffn_dim=512, num_heads=2, num_layers=2,
    freq_dim=256,
)


def random_dit(config: DiTConfig, seed: int = 0, model_class: type[WanModel] = WanModel) -> WanModel:
    """A float32 ``model_class`` (``WanModel`` or a subclass taking ``config``) with seeded random
    weights of realistic scale."""
    generator = torch.Generator().manual_seed(seed)
    model = model_class(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("modulation"):
                value = noise / math.sqrt(config.dim)
            elif name.split(".")[-2] in ("norm_q", "norm_k", "norm3") and name.endswith("weight"):
                value = 1 + 0.1 * noise
            elif name.endswith("bias"):
                value = 0.02 * noise
            else:
                value = noise / math.sqrt(param[0].numel())
            param.copy_(value)
    return model.eval().requires_grad_(False)


def write_dit(
    folder: str | Path,
    config: DiTConfig,
    seed: int = 0,
    shards: int = 1,
    dtype: torch.dtype = torch.float32,
    model_class: type[WanModel] = WanModel,
) -> Path:
    """Write ``config.json`` and the weights of a random DiT into ``folder`` as the official
    release does: ``diffusion_pytorch_model.safetensors``, or with ``shards > 1``
    ``diffusion_pytorch_model-0000i-of-0000n.safetensors`` plus the index file. ``model_class``
    is ``WanModel`` or a subclass whose config ``config`` is (the S2V DiT)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = random_dit(config, seed, model_class)
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    if shards == 1:
        write_safetensors(folder / SINGLE_FILE, state)
    else:
        weight_map = {}
        per_shard = math.ceil(len(keys) / shards)
        for i in range(shards):
            name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in keys[i * per_shard:(i + 1) * per_shard]}
            weight_map.update(dict.fromkeys(part, name))
            write_safetensors(folder / name, part)
        total = sum(v.numel() * v.element_size() for v in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        atomic_write(folder / INDEX_FILE, lambda p: p.write_text(json.dumps(index, indent=2)))
    atomic_write(
        folder / "config.json", lambda p: p.write_text(json.dumps(config.to_official_json(), indent=2))
    )
    return folder
