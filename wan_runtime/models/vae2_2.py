"""The Wan 2.2 VAE (``Wan2.2_VAE.pth``): 48 latent channels, stride 4 x 16 x 16.

Pixels are first folded into 2x2 patches (12 channels), so the 8x8 stride of the convolutional
part gives 16x16. The encoder (base width ``dim``, 160 in the release) and the decoder (base width
``dec_dim``, 256) have the 2.1 layout of levels, but every resampling level is a residual unit of
its own: ``layers(x) + shortcut(x)``, where the shortcut is a parameter-free reshape that moves
space/time into channels and averages channel groups (down) or repeats channels and moves them
into space/time (up). Upsamples keep the channel count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wan_runtime.models.vae_autoencoder import CausalAutoencoder, Decoder3d, Encoder3d
from wan_runtime.models.vae_blocks import Resample, ResidualBlock, StreamCache

Z_DIM = 48
DIM_MULT = (1, 2, 4, 4)
TEMPORAL_DOWNSAMPLE = (False, True, True)
RESIDUAL_BLOCKS = 2
PATCH_SIZE = 2

# Per-channel statistics of the latents, from the official ``Wan2_2_VAE``: the model's latents
# are ``(mu - MEAN) / STD``.
MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip


class AvgDown3D(nn.Module):
    """Shortcut of a downsampling level: fold each (time x 2-D) block of ``factor_t x factor_s x
    factor_s`` positions into channels, then average consecutive groups of those channels down to
    ``out_channels``. A chunk whose frame count is not a multiple of ``factor_t`` is padded with
    zero frames in front (the single first frame of a video)."""

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.factor_t = factor_t
        self.factor_s = factor_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        return x.reshape(b, self.out_channels, -1, t // ft, h // fs, w // fs).mean(dim=2)


class DupUp3D(nn.Module):
    """Shortcut of an upsampling level, the mirror of ``AvgDown3D``: repeat each channel, then
    unfold channel groups into ``factor_t x factor_s x factor_s`` blocks of positions."""

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.factor_t = factor_t
        self.factor_s = factor_s
        self.repeats = out_channels * factor_t * factor_s * factor_s // in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).view(b, self.out_channels, ft, fs, fs, t, h, w)
        return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_channels, t * ft, h * fs, w * fs)


class DownResidualBlock(nn.Module):
    """An encoder level: residual blocks and (optionally) a downsample, plus an ``AvgDown3D``
    shortcut around them."""

    def __init__(self, in_dim: int, out_dim: int, temporal: bool, down: bool) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown3D(
            in_dim, out_dim, factor_t=2 if temporal else 1, factor_s=2 if down else 1
        )
        layers: list[nn.Module] = [ResidualBlock(in_dim, out_dim)]
        layers += [ResidualBlock(out_dim, out_dim) for _ in range(RESIDUAL_BLOCKS - 1)]
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        shortcut = self.avg_shortcut(x)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x + shortcut


class UpResidualBlock(nn.Module):
    """A decoder level: residual blocks and (optionally) an upsample; with the upsample, plus a
    ``DupUp3D`` shortcut around them."""

    def __init__(self, in_dim: int, out_dim: int, temporal: bool, up: bool) -> None:
        super().__init__()
        self.avg_shortcut = (
            DupUp3D(in_dim, out_dim, factor_t=2 if temporal else 1, factor_s=2) if up else None
        )
        layers: list[nn.Module] = [ResidualBlock(in_dim, out_dim)]
        layers += [ResidualBlock(out_dim, out_dim) for _ in range(RESIDUAL_BLOCKS)]
        if up:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        main = x
        for layer in self.upsamples:
            main = layer(main, cache)
        if self.avg_shortcut is None:
            return main
        # The first latent frame becomes one frame, not factor_t: keep the shortcut's last ones.
        return main + self.avg_shortcut(x)[:, :, -main.shape[2] :]


def _encoder(dim: int) -> Encoder3d:
    dims = [dim * m for m in (1, *DIM_MULT)]
    levels = [
        DownResidualBlock(in_dim, out_dim, TEMPORAL_DOWNSAMPLE[i] if i < 3 else False, down=i < 3)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True))
    ]
    return Encoder3d(3 * PATCH_SIZE**2, dims, nn.Sequential(*levels), Z_DIM * 2)


def _decoder(dim: int) -> Decoder3d:
    dims = [dim * m for m in (DIM_MULT[-1], *DIM_MULT[::-1])]
    temporal_upsample = TEMPORAL_DOWNSAMPLE[::-1]
    levels = [
        UpResidualBlock(in_dim, out_dim, temporal_upsample[i] if i < 3 else False, up=i < 3)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True))
    ]
    return Decoder3d(Z_DIM, dims, nn.Sequential(*levels), 3 * PATCH_SIZE**2)


def build_vae22(dim: int = 160, dec_dim: int = 256) -> CausalAutoencoder:
    """The Wan 2.2 autoencoder with encoder width ``dim`` and decoder width ``dec_dim``, randomly
    initialised."""
    return CausalAutoencoder(_encoder(dim), _decoder(dec_dim), Z_DIM, patch_size=PATCH_SIZE)
