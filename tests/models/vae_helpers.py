"""Shared pieces of the VAE tests: tiny widths, files from our writer, official wrappers on a CPU."""

from __future__ import annotations

import functools
from pathlib import Path
from unittest import mock

import torch

from tests.official import official_module
from wan_runtime.tiny_checkpoints.vae import write_vae21, write_vae22

# Tiny widths (the release has 96 for 2.1, and 160 / 256 for the 2.2 encoder / decoder); the
# 2.2 decoder width differs from the encoder's so that reading both from the shapes is tested.
DIM_21 = 16
DIM_22, DEC_DIM_22 = 16, 24


def tiny_files(folder: Path) -> dict[str, Path]:
    """Our writer's tiny 2.1 and 2.2 files in ``folder``."""
    return {
        "2.1": write_vae21(folder / "Wan2.1_VAE.pth", base_dim=DIM_21, seed=1),
        "2.2": write_vae22(folder / "Wan2.2_VAE.pth", base_dim=DIM_22, decoder_dim=DEC_DIM_22, seed=2),
    }


def official_wrapper(version: str, path: Path):
    """The official ``Wan2_1_VAE`` / ``Wan2_2_VAE`` on the CPU, loading ``path``.

    The wrappers hard-code the release widths when they call ``_video_vae``; it is wrapped here
    to pass the tiny ones, and everything else (constants, scale, clamp, dtype casts) is theirs.
    Their ``torch.cuda.amp.autocast`` disables itself without CUDA, so float32 runs as is, and
    their ``torch.load`` reads with torch's default ``weights_only=True``.
    """
    if version == "2.1":
        module = official_module("modules.vae2_1")
        wrapper, sizes, widths = module.Wan2_1_VAE, {"z_dim": 16}, {"dim": DIM_21}
    else:
        module = official_module("modules.vae2_2")
        wrapper, sizes, widths = module.Wan2_2_VAE, {"z_dim": 48, "c_dim": DIM_22}, {"dec_dim": DEC_DIM_22}
    with mock.patch.object(module, "_video_vae", functools.partial(module._video_vae, **widths)):
        return wrapper(vae_pth=str(path), device="cpu", **sizes)


def official_inner_model(version: str, seed: int) -> torch.nn.Module:
    """The official inner ``WanVAE_`` at the tiny widths, with its own random init."""
    torch.manual_seed(seed)
    if version == "2.1":
        module = official_module("modules.vae2_1")
        return module.WanVAE_(dim=DIM_21, z_dim=16, temperal_downsample=[False, True, True]).eval()
    module = official_module("modules.vae2_2")
    return module.WanVAE_(
        dim=DIM_22, dec_dim=DEC_DIM_22, z_dim=48, temperal_downsample=[False, True, True]
    ).eval()
