"""Tiny random Wan VAE files (``.pth`` state dicts) in the official key layout.

Weights are random but non-degenerate: the official init zeroes the attention output projection
and sets every RMSNorm gain to 1, which would hide errors in those layers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from wan_runtime.models.vae2_1 import build_vae21
from wan_runtime.models.vae2_2 import build_vae22
from wan_runtime.tiny_checkpoints.files import atomic_write


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Fill ``model`` with seeded weights that keep activations of order one: fan-in scaled
    kernels, small biases, gains near one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("gamma"):
                param.copy_(1 + 0.1 * noise)
            elif name.endswith("bias"):
                param.copy_(0.02 * noise)
            else:
                param.copy_(noise / math.sqrt(param[0].numel()))
    return model.eval().requires_grad_(False)


def _save(path: str | Path, model: nn.Module, dtype: torch.dtype) -> Path:
    path = Path(path)
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: torch.save(state, p))
    return path


def write_vae21(
    path: str | Path, base_dim: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    """Write a random Wan 2.1 VAE of base width ``base_dim`` (96 in the release) to ``path``."""
    return _save(path, randomize(build_vae21(base_dim), seed), dtype)


def write_vae22(
    path: str | Path,
    base_dim: int = 16,
    decoder_dim: int = 24,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random Wan 2.2 VAE with encoder width ``base_dim`` and decoder width
    ``decoder_dim`` (160 and 256 in the release) to ``path``."""
    return _save(path, randomize(build_vae22(base_dim, decoder_dim), seed), dtype)
