"""The Wan 2.1 VAE (``Wan2.1_VAE.pth``): 16 latent channels, stride 4 x 8 x 8.

With base width ``dim`` (96 in the release) the encoder runs at widths ``dim * [1, 1, 2, 4, 4]``:
each of its four levels is two residual blocks, and the first three end in a 2x spatial
downsample, temporal too in levels 2 and 3. The decoder mirrors it at widths
``dim * [4, 4, 4, 2, 1]`` with three residual blocks per level; each upsample also halves the
channels, so the next level starts from half of the previous level's width.
"""

from __future__ import annotations

from torch import nn

from wan_runtime.models.vae_autoencoder import CausalAutoencoder, Decoder3d, Encoder3d
from wan_runtime.models.vae_blocks import Resample, ResidualBlock

Z_DIM = 16
DIM_MULT = (1, 2, 4, 4)
TEMPORAL_DOWNSAMPLE = (False, True, True)
RESIDUAL_BLOCKS = 2

# Per-channel statistics of the latents, from the official ``Wan2_1_VAE``: the model's latents
# are ``(mu - MEAN) / STD``.
MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


def _encoder(dim: int) -> Encoder3d:
    dims = [dim * m for m in (1, *DIM_MULT)]
    layers: list[nn.Module] = []
    for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers += [ResidualBlock(in_dim, out_dim), ResidualBlock(out_dim, out_dim)]
        if level < len(DIM_MULT) - 1:
            layers.append(Resample(out_dim, "downsample3d" if TEMPORAL_DOWNSAMPLE[level] else "downsample2d"))
    return Encoder3d(3, dims, nn.Sequential(*layers), Z_DIM * 2)


def _decoder(dim: int) -> Decoder3d:
    dims = [dim * m for m in (DIM_MULT[-1], *DIM_MULT[::-1])]
    temporal_upsample = TEMPORAL_DOWNSAMPLE[::-1]
    layers: list[nn.Module] = []
    in_dim = dims[0]
    for level, out_dim in enumerate(dims[1:]):
        for _ in range(RESIDUAL_BLOCKS + 1):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if level < len(DIM_MULT) - 1:
            mode = "upsample3d" if temporal_upsample[level] else "upsample2d"
            layers.append(Resample(out_dim, mode, out_dim=out_dim // 2))
            in_dim = out_dim // 2
    return Decoder3d(Z_DIM, dims, nn.Sequential(*layers), 3)


def build_vae21(dim: int = 96) -> CausalAutoencoder:
    """The Wan 2.1 autoencoder with base width ``dim``, randomly initialised."""
    return CausalAutoencoder(_encoder(dim), _decoder(dim), Z_DIM, patch_size=1)
