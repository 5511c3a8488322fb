"""3-D rotary position tables of the Wan DiT.

The head dimension's ``D/2`` rotation pairs are split between frame, row and column positions as
the official model splits them: ``D/2 - 2*(D/2//3)`` pairs for time, ``D/2//3`` each for height
and width. Each axis uses ``theta=10000`` with frequencies computed over that axis' own width
(``D - 4*(D//6)`` for time, ``2*(D//6)`` for height and width). Angles are computed in float64
and the tables rounded once to float32.
"""

from __future__ import annotations

import torch


def _axis_angles(positions: torch.Tensor, width: int, theta: float = 10000.0) -> torch.Tensor:
    inv_freq = 1.0 / torch.pow(theta, torch.arange(0, width, 2, dtype=torch.float64) / width)
    return positions.to(torch.float64)[:, None] * inv_freq


def rope_tables_at(
    positions: torch.Tensor, head_dim: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` tables, each [L, 1, head_dim/2] float32, for tokens at integer
    (frame, row, column) ``positions`` [L, 3]. Positions may be negative: the angle is then negated,
    as the official conjugated tables of the S2V motion frames are."""
    third = head_dim // 6
    angles = torch.cat(
        [
            _axis_angles(positions[:, 0], head_dim - 4 * third),
            _axis_angles(positions[:, 1], 2 * third),
            _axis_angles(positions[:, 2], 2 * third),
        ],
        dim=-1,
    )[:, None]
    return angles.cos().float().to(device), angles.sin().float().to(device)


def grid_positions(frames: list[int], rows: list[int], columns: list[int]) -> torch.Tensor:
    """[len(frames) * len(rows) * len(columns), 3] positions of a token grid, frame-major (f, h, w)
    as the patch embedding flattens it."""
    axes = [torch.tensor(axis, dtype=torch.long) for axis in (frames, rows, columns)]
    return torch.cartesian_prod(*axes).view(-1, 3)


def rope_tables(
    grid: tuple[int, int, int], head_dim: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` tables, each [F*H*W, 1, head_dim/2] float32, for a token grid (F, H, W)
    at positions ``0..F-1``, ``0..H-1``, ``0..W-1``."""
    f, h, w = grid
    return rope_tables_at(grid_positions(list(range(f)), list(range(h)), list(range(w))), head_dim, device)
