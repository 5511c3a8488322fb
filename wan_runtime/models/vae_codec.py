"""``WanVAE``: lists of videos to normalised latents and back, as the official ``Wan2_1_VAE`` /
``Wan2_2_VAE`` wrappers do."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wan_runtime.checks import DEFAULT_VAE_TILE
from wan_runtime.distributed.row_split import RowSplit
from wan_runtime.errors import InputError
from wan_runtime.models.vae_autoencoder import ENCODER_CHUNK, CausalAutoencoder
from wan_runtime.models.vae_tiling import decode_tiled


class WanVAE:
    """A loaded Wan VAE (build it with ``load_vae``).

    ``encode`` maps videos [3, F, H, W] in [-1, 1] (``F = 1 + 4n``, ``H`` and ``W`` multiples of
    ``spatial_stride``) to latents [z_dim, 1 + n, H / s, W / s] normalised per channel as
    ``(mu - mean) / std``; ``decode`` maps latents back to videos clamped to [-1, 1]. Inputs may
    be on any device and dtype: they are moved to the model's; outputs are float32 on the model's
    device. The model computes in ``dtype`` (the official wrappers' autocast dtype).

    ``row_split``: the processes of a launch that encode and decode every video together (each
    of them calling with the same videos or latents, and each getting the whole result), each a
    band of the rows (``wan_runtime.distributed.row_split``; of each tile's rows in a tiled
    decode): about ``1 / world`` of the time and of the activations each, besides the whole
    result gathered. None (the default): this process alone.
    """

    row_split: RowSplit | None = None

    def __init__(
        self, version: str, model: CausalAutoencoder, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.version = version
        self.model = model.eval().requires_grad_(False)
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.mean = torch.tensor(mean, dtype=self.dtype, device=self.device).view(1, -1, 1, 1, 1)
        self.inv_std = (1.0 / torch.tensor(std, dtype=self.dtype, device=self.device)).view(1, -1, 1, 1, 1)

    @property
    def z_dim(self) -> int:
        """Latent channels: 16 (2.1) or 48 (2.2)."""
        return self.model.z_dim

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent pixel along height and width: 8 (2.1) or 16 (2.2)."""
        return self.model.spatial_stride

    @property
    def temporal_stride(self) -> int:
        """Frames per latent frame after the first: 4."""
        return ENCODER_CHUNK

    def _check(self, items: object, what: str, channels: int, stride: int) -> None:
        if not isinstance(items, (list, tuple)) or not all(isinstance(u, torch.Tensor) for u in items):
            raise InputError(f"VAE {what} must be a list of tensors, got {type(items).__name__}")
        for i, u in enumerate(items):
            shape_ok = u.dim() == 4 and u.shape[0] == channels and min(u.shape[1:]) > 0
            if not shape_ok or u.shape[2] % stride or u.shape[3] % stride:
                raise InputError(
                    f"VAE {what}[{i}] has shape {tuple(u.shape)}; expected [{channels}, F, H, W] with "
                    f"F positive and H, W positive multiples of {stride}"
                )

    def encode(self, videos: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encode each [3, F, H, W] video (``F % 4 == 1``) to normalised latents, float32."""
        self._check(videos, "videos", 3, self.spatial_stride)
        for i, u in enumerate(videos):
            if u.shape[1] % ENCODER_CHUNK != 1:
                raise InputError(
                    f"VAE videos[{i}] has {u.shape[1]} frames; the VAE needs 1 + 4n frames "
                    "(the official code silently drops the rest): trim or pad the video"
                )
        with torch.inference_mode():
            out = []
            for u in videos:
                mu = self.model.encode(u.to(self.device, self.dtype).unsqueeze(0), self.row_split)
                out.append(((mu - self.mean) * self.inv_std).float().squeeze(0))
            return out

    def decode_latent(self, latent: torch.Tensor, tile_size: int = 0) -> torch.Tensor:
        """One latent [z_dim, T, h, w] decoded to pixels [3, F, H, W]: whole frames with
        ``tile_size`` 0, else in tiles of that many pixels (``decode``'s ``tiled``)."""
        if not tile_size:
            return self.decode([latent])[0]
        return self.decode([latent], tiled=True, tile_size=tile_size)[0]

    def decode(
        self,
        zs: list[torch.Tensor],
        tiled: bool = False,
        tile_size: int = DEFAULT_VAE_TILE,
        tile_overlap: int | None = None,
    ) -> list[torch.Tensor]:
        """Decode each [z_dim, T, h, w] latent video to pixels [3, 1 + 4(T-1), h*s, w*s] in
        [-1, 1], float32.

        With ``tiled=True`` the frames are decoded in spatial tiles of ``tile_size`` pixels
        overlapping by ``tile_overlap`` pixels (a quarter of a tile by default; both multiples of
        ``spatial_stride``), blended
        linearly, which bounds activation memory by the tile instead of the frame. Tiling changes
        the result near tile borders; the relative L2 error against the untiled decode, measured
        on the tiny random test models (tests/models/test_vae_tiling.py), is 0.11 (2.1, 64-pixel
        tiles, 16 overlap, 64x96 frames) and 0.22 (2.2, 96-pixel tiles, 32 overlap, 96x128). Random
        weights mix the whole frame; trained decoders are far more local, but with them the error
        is not yet measured.

        Memory of a 720p (2.2: 1280x704), 81-frame decode in bfloat16. The decoder streams one latent frame (4
        output frames) at a time; its largest activations are at full resolution: 2.1 has 96
        channels x (4 + 2 cached) frames x 921,600 pixels x 2 B = 1.1 GB per tensor, and each
        causal conv keeps 2 past frames (7 convs at full resolution: 2.5 GB); 2.2 works at
        640x352 after the 2x2 patchify with 256-512 channels (up to 1.4 GB per tensor). The
        float32 output is 3 x 81 x 921,600 x 4 B = 0.9 GB. Measured on an H100 with random
        weights at the release widths: untiled peak 11.7 GiB (2.1) / 10.6 GiB (2.2) allocated,
        16-17 GiB reserved; tiled with the default 512-pixel tiles 5.6 / 5.3 GiB allocated, 7.7
        GiB reserved, i.e. it fits a 24 GB GPU with room to spare; it took 7.4 s / 6.3 s against
        3.9 s / 3.5 s untiled.
        """
        self._check(zs, "latents", self.z_dim, 1)
        stride = self.spatial_stride
        tile_overlap = tile_size // 4 if tile_overlap is None else tile_overlap
        if tiled and (tile_size % stride or tile_overlap % stride or not 0 < 2 * tile_overlap <= tile_size):
            raise InputError(
                f"tile_size={tile_size} and tile_overlap={tile_overlap} must be multiples of {stride} "
                "with 0 < 2 * tile_overlap <= tile_size"
            )
        with torch.inference_mode():
            out = []
            for u in zs:
                z = u.to(self.device, self.dtype).unsqueeze(0) / self.inv_std + self.mean
                if tiled:
                    pixels = decode_tiled(self.model, z, tile_size // stride, tile_overlap // stride,
                                          self.row_split)
                else:
                    pixels = self.model.decode(z, self.row_split).float()
                out.append(pixels.clamp_(-1, 1).squeeze(0))
            return out
