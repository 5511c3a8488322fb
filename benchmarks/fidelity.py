"""How far a cached output is from the uncached one: max error, PSNR and SSIM, in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# SSIM as Wang et al. 2004: an 11-tap Gaussian window of sigma 1.5 and the stabilisers
# C1 = (0.01 L)^2, C2 = (0.03 L)^2 for a data range L.
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
# The value range of the pipelines' videos, [-1, 1].
VIDEO_RANGE = 2.0


def max_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference."""
    return (out.float() - ref.float()).abs().max().item()


def psnr(out: torch.Tensor, ref: torch.Tensor, data_range: float | None = None) -> float:
    """PSNR in dB; ``data_range`` defaults to the reference's max - min (inf when equal)."""
    ref = ref.float()
    span = (ref.max() - ref.min()).item() if data_range is None else data_range
    mse = (out.float() - ref).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(span**2 / mse)


def ssim(out: torch.Tensor, ref: torch.Tensor, data_range: float = VIDEO_RANGE) -> float:
    """Mean SSIM of videos [C, F, H, W] (frames as images, channels separately); the default
    range fits the pipelines' [-1, 1] videos."""
    x = out.float().permute(1, 0, 2, 3).flatten(0, 1)[:, None]  # [F*C, 1, H, W]
    y = ref.float().permute(1, 0, 2, 3).flatten(0, 1)[:, None]
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float32) - SSIM_WINDOW // 2
    g = torch.exp(-coords.square() / (2 * SSIM_SIGMA**2))
    g = (g / g.sum()).to(x.device)
    window = (g[:, None] * g[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.mean().item()
