"""DiT forward inputs shared by the multi-process DiT tests."""

from __future__ import annotations

import torch

from wan_runtime.models.dit_config import DiTConfig
from wan_runtime.tiny_checkpoints import TINY_I2V, TINY_TI2V


def dit_inputs(config: DiTConfig, grid: tuple[int, int, int], per_token: bool) -> tuple:
    """Seeded ``WanModel.forward`` inputs for latents of ``grid`` (frames, height, width)."""
    generator = torch.Generator().manual_seed(1)
    f, h, w = grid
    x = torch.randn(1, 16 if config.model_type == "i2v" else config.in_dim, f, h, w, generator=generator)
    y = torch.randn(1, 20, f, h, w, generator=generator) if config.model_type == "i2v" else None
    tokens, per_frame = f * h * w // 4, h * w // 4
    # ti2v with an image: the first frame's tokens at timestep 0.
    t = torch.cat([torch.zeros(1, per_frame), torch.full((1, tokens - per_frame), 700.0)], dim=1) \
        if per_token else torch.tensor([700.0])
    context = torch.randn(1, 7, config.text_dim, generator=generator)
    return x, t, context, y


CASES = {
    "i2v, 45 tokens: padded": (TINY_I2V, (3, 6, 10), False),
    "ti2v per-token timesteps, 16 tokens": (TINY_TI2V, (2, 4, 8), True),
    "ti2v per-token timesteps, 45 tokens": (TINY_TI2V, (3, 6, 10), True),
}
