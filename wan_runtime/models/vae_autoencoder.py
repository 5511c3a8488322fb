"""The causal video autoencoder both Wan VAEs share: encoder, latent convs, decoder, and the
chunk schedule that streams a video through them.

A video of ``1 + 4n`` frames is encoded as the first frame alone, then ``n`` chunks of 4 frames,
giving ``1 + n`` latent frames; the latents are decoded one frame at a time. The versions differ
only in the layers of ``downsamples`` / ``upsamples`` and, for 2.2, a 2x2 pixel patchify around
the whole model (see ``vae2_1`` and ``vae2_2``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from wan_runtime.distributed.row_split import RowSplit
from wan_runtime.models.vae_blocks import CausalConv3d, Head, Middle, StreamCache

ENCODER_CHUNK = 4
"""Frames per encoder chunk after the first frame; also the temporal stride of both VAEs."""


def patchify(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, T, H*size, W*size] -> [B, C*size*size, T, H, W]; the channel index is
    ``(c * size + column offset) * size + row offset``, as in the official layout."""
    if size == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // size, size, w // size, size)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * size * size, t, h // size, w // size)


def unpatchify(x: torch.Tensor, size: int) -> torch.Tensor:
    """The inverse of ``patchify``."""
    if size == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c // (size * size), size, size, t, h, w)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c // (size * size), t, h * size, w * size)


class Encoder3d(nn.Module):
    """conv1 -> downsampling levels -> middle -> head, on one chunk of frames."""

    def __init__(
        self, in_channels: int, dims: list[int], downsamples: nn.Sequential, out_channels: int
    ) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.downsamples = downsamples
        self.middle = Middle(dims[-1])
        self.head = Head(dims[-1], out_channels)

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in self.downsamples:
            x = layer(x, cache)
        return self.head(self.middle(x, cache), cache)


class Decoder3d(nn.Module):
    """conv1 -> middle -> upsampling levels -> head, on one latent frame."""

    def __init__(
        self, in_channels: int, dims: list[int], upsamples: nn.Sequential, out_channels: int
    ) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.middle = Middle(dims[0])
        self.upsamples = upsamples
        self.head = Head(dims[-1], out_channels)

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        x = self.middle(self.conv1(x, cache), cache)
        for layer in self.upsamples:
            x = layer(x, cache)
        return self.head(x, cache)


class CausalAutoencoder(nn.Module):
    """The official ``WanVAE_`` computation: ``encode`` gives the latent mean ``mu`` (the
    log-variance half of ``conv1``'s output is unused at inference), ``decode`` the pixels,
    both unnormalised and unclamped, on [B, C, T, H, W] tensors."""

    def __init__(self, encoder: Encoder3d, decoder: Decoder3d, z_dim: int, patch_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = decoder
        self.z_dim = z_dim
        self.patch_size = patch_size
        self.spatial_stride = patch_size * 8

    def encode(self, x: torch.Tensor, split: RowSplit | None = None) -> torch.Tensor:
        """``split``: each process of it encodes a band of the rows (every one holding the
        whole video ``x``) and every one returns the whole latent."""
        return _in_bands(split, x.shape[-2] // self.spatial_stride, self._encode, x)

    def decode(self, z: torch.Tensor, split: RowSplit | None = None) -> torch.Tensor:
        """``split``: each process of it decodes a band of the rows (every one holding the
        whole latent ``z``) and every one returns the whole video."""
        return _in_bands(split, z.shape[-2], self._decode, z)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        x = patchify(x, self.patch_size)
        cache: StreamCache = {}
        starts = [0, *range(1, x.shape[2], ENCODER_CHUNK)]
        ends = [*starts[1:], x.shape[2]]
        chunks = [x[:, :, a:b] for a, b in zip(starts, ends, strict=True)]
        out = torch.cat([self.encoder(chunk, cache) for chunk in chunks], dim=2)
        return self.conv1(out)[:, : self.z_dim]

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv2(z)
        cache: StreamCache = {}
        frames = [self.decoder(x[:, :, i : i + 1], cache) for i in range(x.shape[2])]
        return unpatchify(torch.cat(frames, dim=2), self.patch_size)


def _in_bands(
    split: RowSplit | None, rows: int, work: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``work(x)`` on a frame of ``rows`` base rows; with ``split``, on this process's band of
    them, the bands gathered whole after."""
    bands = None if split is None else split.bands(rows)
    if bands is None:
        return work(x)
    with bands.active():
        return bands.gather(work(bands.own(x)))
