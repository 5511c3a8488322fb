"""Decoding latents in overlapping spatial tiles, for resolutions whose activations do not fit.

Each tile of latents is decoded on its own over all frames (still one latent frame at a time),
so activation memory scales with the tile area instead of the frame area. Neighbouring tiles
overlap by ``overlap`` latent pixels; in the overlap the decoded pixels are blended with weights
that ramp linearly from one tile to the other, and every output pixel is the weighted mean of the
tiles covering it. The decoder's middle attention sees only its tile and its convolutions see
zeros past the tile border, so the result differs from the untiled decode near tile borders
(measured error and memory: see ``WanVAE.decode``). Split over processes, each tile is decoded
split in bands of rows (``CausalAutoencoder.decode``): the memory of a band of a tile.
"""

from __future__ import annotations

import torch

from wan_runtime.distributed.row_split import RowSplit
from wan_runtime.models.vae_autoencoder import CausalAutoencoder


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length``, consecutive ones overlapping by
    at least ``overlap``; the last tile ends at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _ramp(size: int, fade: int, fade_in: bool, fade_out: bool, device: torch.device) -> torch.Tensor:
    weight = torch.ones(size, device=device)
    rising = (torch.arange(fade, device=device) + 0.5) / fade
    if fade_in:
        weight[:fade] = rising
    if fade_out:
        weight[-fade:] = torch.minimum(weight[-fade:], rising.flip(0))
    return weight


def decode_tiled(
    model: CausalAutoencoder, z: torch.Tensor, tile: int, overlap: int, split: RowSplit | None = None
) -> torch.Tensor:
    """``model.decode(z)`` for one [1, C, T, h, w] latent video, in ``tile x tile`` latent tiles
    overlapping by ``overlap`` (``0 < 2 * overlap <= tile``), or whole when one tile covers the
    frame; returns float32 pixels. ``split``: every tile decoded split over its processes (each
    holding the whole latent, each getting the whole video)."""
    _, _, _, h, w = z.shape
    if h <= tile and w <= tile:
        # One tile covers the frame: decoding it whole gives the same numbers without the blend's
        # buffers, and nothing is sized by the tile, however large.
        return model.decode(z, split).float()
    stride = model.spatial_stride
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    fade = overlap * stride
    out: torch.Tensor | None = None
    total = torch.zeros(h * stride, w * stride, device=z.device)
    done: set[tuple[bool, ...]] = set()
    for y in rows:
        for x in cols:
            edges = (y > 0, y + tile < h, x > 0, x + tile < w)
            # Every tile has one shape, so what one allocates, beside what the tiles before it left
            # (the same from the second on), follows from its edges: on the meta device (the memory
            # estimate's, whose tensors have no values to blend) each kind decodes once, however many.
            if z.is_meta and edges in done:
                continue
            done.add(edges)
            pixels = model.decode(z[:, :, :, y : y + tile, x : x + tile], split).float()
            th, tw = pixels.shape[-2:]
            weight = _ramp(th, fade, *edges[:2], z.device)[:, None] * _ramp(tw, fade, *edges[2:], z.device)
            if out is None:
                out = pixels.new_zeros(*pixels.shape[:3], h * stride, w * stride)
            region = (slice(y * stride, y * stride + th), slice(x * stride, x * stride + tw))
            out[..., region[0], region[1]] += pixels * weight
            total[region] += weight
    return out / total
