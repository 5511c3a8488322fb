"""Building blocks shared by the Wan 2.1 and Wan 2.2 VAEs.

Both VAEs process a video as a stream of chunks of frames (the encoder: the first frame alone,
then 4 frames at a time; the decoder: one latent frame at a time). Every layer that looks back
in time keeps what it needs of the previous chunk in a ``StreamCache``, so a chunked pass gives
the same numbers as the official one while only a few frames' activations are alive at once.

Split over processes in bands of rows (``wan_runtime.distributed.row_split``), the layers that
read past a pixel's row, the 3x3 convolutions and the attention, read the neighbouring bands'
rows or the whole frame, so that each band's rows are the whole frame's.

Parameter names (``residual.0.gamma``, ``resample.1.weight``, ``time_conv.weight``, ...) are the
official ones, so the official ``.pth`` state dicts load without a key mapping; where a layer
has no parameters it still occupies its index in an ``nn.Sequential`` to keep the numbering.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wan_runtime.distributed.row_split import active_bands

StreamCache = dict[nn.Module, "torch.Tensor | None"]
"""Per-layer state carried from one chunk to the next; a fresh empty dict starts a new video."""


class CausalConv3d(nn.Conv3d):
    """A 3-D convolution that only looks at the current and past frames.

    Spatial padding is symmetric; in time the input is preceded by the last ``kernel_t - 1``
    frames of the previous chunk (zeros before the first chunk), so running a video chunk by
    chunk equals running it whole with ``kernel_t - 1`` zero frames in front.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
    ) -> None:
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_channels, out_channels, (kt, kh, kw), stride=stride, padding=(0, ph, pw))
        self.history = 2 * pt

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        rows = self.padding[1]
        bands = active_bands() if rows else None
        if bands is not None:
            # Past a band's edges the rows are its neighbours', not the padding's zeros (the row
            # stride is 1: the band's output rows read ``rows`` more on each side); the past
            # frames are cached with them.
            x = bands.halo(x, rows, rows)
        if self.history:
            past = cache.get(self) if cache is not None else None
            if past is None:
                past = x.new_zeros(*x.shape[:2], self.history, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                cache[self] = x[:, :, -self.history :].clone()
        if bands is None:
            return super().forward(x)
        return F.conv3d(x, self.weight, self.bias, self.stride, (0, 0, self.padding[2]))


class RMSNorm(nn.Module):
    """RMS normalisation over the channel axis (dim 1) with a learned per-channel gain."""

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def per_frame(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D ``layer`` to each frame of a [B, C, T, H, W] video."""
    b, _, t = x.shape[:3]
    frames = layer(x.transpose(1, 2).flatten(0, 1))
    return frames.unflatten(0, (b, t)).transpose(1, 2)


class ResidualBlock(nn.Module):
    """``x + residual(x)``: two (RMSNorm, SiLU, causal 3x3x3 conv) stages; a 1x1x1 shortcut conv
    where the channel count changes."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, spatial_dims=3),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, spatial_dims=3),
            nn.SiLU(),
            nn.Identity(),  # the official dropout slot, inactive at inference
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        h = conv1(F.silu(norm1(x)), cache)
        h = conv2(F.silu(norm2(h)), cache)
        return self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame separately (so it needs nothing
    from earlier chunks: ``cache`` is accepted only to match the other layers)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).flatten(2).transpose(1, 2).unsqueeze(1).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.squeeze(1).transpose(1, 2).reshape(n, c, h, w))

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        bands = active_bands()
        if bands is None:
            return x + per_frame(self._attend, x)
        # Each pixel attends to the whole frame: attend over the gathered frame, keep the band.
        return x + bands.own(per_frame(self._attend, bands.gather(x)))


class Resample(nn.Module):
    """Halve or double the spatial size of each frame, and for the ``*3d`` modes the frame count.

    - ``downsample2d``: pad right/bottom by one, 3x3 conv with stride 2.
    - ``downsample3d``: the same, then a stride-2 temporal conv over (previous frame, this pair)
      from the second frame on; the first frame passes through, so 1 + 2n frames become 1 + n.
    - ``upsample2d``: nearest-exact 2x, 3x3 conv to ``out_dim`` channels.
    - ``upsample3d``: from the second frame on, a causal temporal conv makes two frames of each
      (its two channel halves, interleaved); the first frame stays single, so 1 + n frames
      become 1 + 2n. Then as ``upsample2d``.
    """

    def __init__(self, dim: int, mode: str, out_dim: int | None = None) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                nn.Conv2d(dim, out_dim or dim, 3, padding=1),
            )
        elif mode.startswith("downsample"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def _double_frames(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        if self.time_conv not in cache:
            # The first chunk (one frame) is not doubled; later frames see zeros, not it, as past.
            cache[self.time_conv] = None
            return x
        b, c, t, h, w = x.shape
        pairs = self.time_conv(x, cache).view(b, 2, c, t, h, w)
        return pairs.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)

    def _halve_frames(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        previous = cache.get(self)
        cache[self] = x[:, :, -1:].clone()
        if previous is None:
            return x
        return self.time_conv(torch.cat([previous, x], dim=2))

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        """``resample`` on each frame; on a band of rows (``active_bands``) the convolution
        reads the neighbouring bands' rows past the band's edges."""
        bands = active_bands()
        if bands is None:
            return per_frame(self.resample, x)
        first, conv = self.resample
        if self.mode.startswith("upsample"):
            x, padding = bands.halo(per_frame(first, x), 1, 1), (0, 1)
        else:  # the zero padding right and below: below, the band below's first row instead
            x, padding = F.pad(bands.halo(x, 0, 1), (0, 1)), 0
        return per_frame(lambda frames: F.conv2d(frames, conv.weight, conv.bias, conv.stride, padding), x)

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        x = self._resample(x)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x


class Middle(nn.Sequential):
    """Residual block, attention, residual block at the lowest resolution."""

    def __init__(self, dim: int) -> None:
        super().__init__(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        for block in self:
            x = block(x, cache)
        return x


class Head(nn.Sequential):
    """RMSNorm, SiLU and a causal 3x3x3 conv to the output channels."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(
            RMSNorm(in_dim, spatial_dims=3), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        norm, _, conv = self
        return conv(F.silu(norm(x)), cache)
