"""3-D rotary position tables of the Wan DiT.

The head dimension's ``D/2`` rotation pairs are split between frame, row and column positions as
the official model splits them: ``D/2 - 2*(D/2//3)`` pairs for time, ``D/2//3`` each for height
and width. Each axis uses ``theta=10000`` with frequencies computed over that axis' own width
(``D - 4*(D//6)`` for time, ``2*(D//6)`` for height and width). Angles are computed in float64
and the tables rounded once to float32.
"""

from __future__ import annotations

import torch


def _axis_angles(positions: int, width: int, theta: float = 10000.0) -> torch.Tensor:
    inv_freq = 1.0 / torch.pow(theta, torch.arange(0, width, 2, dtype=torch.float64) / width)
    return torch.outer(torch.arange(positions, dtype=torch.float64), inv_freq)


def rope_tables(
    grid: tuple[int, int, int], head_dim: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` tables, each [F*H*W, 1, head_dim/2] float32, for a token grid (F, H, W).

    Tokens are ordered frame-major (f, h, w), as the patch embedding flattens them.
    """
    f, h, w = grid
    third = head_dim // 6
    t_angles = _axis_angles(f, head_dim - 4 * third)
    h_angles = _axis_angles(h, 2 * third)
    w_angles = _axis_angles(w, 2 * third)
    angles = torch.cat(
        [
            t_angles[:, None, None, :].expand(f, h, w, -1),
            h_angles[None, :, None, :].expand(f, h, w, -1),
            w_angles[None, None, :, :].expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, head_dim // 2)
    return angles.cos().float().to(device), angles.sin().float().to(device)
