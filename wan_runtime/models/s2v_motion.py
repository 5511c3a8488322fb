"""FramePack motion tokens of the S2V DiT (official ``FramePackMotioner``) and the RoPE positions
of every S2V token group.

The last 19 latent frames of the previous clip (zero-padded in front when fewer) are split into
buckets of 1, 2 and 16 frames, nearest first. The nearest frame is patchified like the video
(1x2x2), the next two 2x coarser (2x4x4) and the farthest sixteen 4x coarser (4x8x8), so old
motion costs few tokens. Their rotary positions lie before the clip (negative frame positions) and
stretch the coarse grids over the full-resolution row and column range.

Positions follow the official ``rope_precompute``: an axis spanning ``extent`` positions with
``count`` tokens uses ``numpy.linspace(start, start + extent - 1, count)`` truncated to integers.
numpy is used on purpose: its rounding decides where a truncated position falls.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wan_runtime.models.rope import grid_positions

BUCKETS = (1, 2, 16)  # latent frames per bucket, nearest first
MOTION_LATENT_FRAMES = sum(BUCKETS)
REF_FRAME_POSITION = 30  # the reference image's frame position, after any clip's frames


def spread(start: int, extent: int, count: int) -> list[int]:
    """``count`` integer positions spread over ``start .. start + extent - 1``."""
    return np.linspace(start, start + extent - 1, count).astype(int).tolist()


def video_positions(frames: int, rows: int, columns: int) -> torch.Tensor:
    """Positions [F*H*W, 3] of the video tokens: the plain grid."""
    return grid_positions(list(range(frames)), list(range(rows)), list(range(columns)))


def ref_positions(rows: int, columns: int) -> torch.Tensor:
    """Positions of the reference image's tokens: one frame at ``REF_FRAME_POSITION``."""
    return grid_positions([REF_FRAME_POSITION], list(range(rows)), list(range(columns)))


def motion_positions(latent_height: int, latent_width: int) -> torch.Tensor:
    """Positions [L_m, 3] of the FramePack tokens for motion latents of this size.

    Bucket k (1, 2 or 16 frames) ends ``sum(BUCKETS[:k+1])`` frames before the clip; its
    ``bucket / scale`` token frames are spread over those frames, counted backwards (negative
    positions), and its rows and columns over the full token grid ``latent / 2``.
    """
    rows, columns = latent_height // 2, latent_width // 2
    groups, end = [], 0
    for scale, frames in zip((1, 2, 4), BUCKETS, strict=True):
        end += frames
        # Official order: the bucket's oldest token frame first, at -end.
        ages = np.linspace(end, end - frames + 1, frames // scale).astype(int)
        groups.append(grid_positions(
            [-int(age) for age in ages],
            spread(0, rows, latent_height // (2 * scale)),
            spread(0, columns, latent_width // (2 * scale)),
        ))
    return torch.cat(groups)


class FramePack(nn.Module):
    """Patch embeddings of the three motion buckets (official names ``proj``, ``proj_2x``,
    ``proj_4x``)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_dim, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(in_dim, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(in_dim, dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    def forward(self, motion_latents: torch.Tensor) -> torch.Tensor:
        """Motion latents [B, C, T_m, H, W] (the last 19 frames are used) -> tokens [B, L_m, dim],
        nearest bucket first, in the order of ``motion_positions``."""
        frames = min(motion_latents.size(2), MOTION_LATENT_FRAMES)
        recent = motion_latents[:, :, motion_latents.size(2) - frames:]
        padded = F.pad(recent, (0, 0, 0, 0, MOTION_LATENT_FRAMES - frames, 0))
        far, middle, near = padded.split(BUCKETS[::-1], dim=2)
        weight_dtype = self.proj.weight.dtype
        return torch.cat(
            [proj(bucket.to(weight_dtype)).flatten(2).transpose(1, 2)
             for proj, bucket in ((self.proj, near), (self.proj_2x, middle), (self.proj_4x, far))],
            dim=1,
        )
