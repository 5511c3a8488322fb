"""Tiled VAE decode: exact blending machinery, and its error against the untiled decode."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tests.models.vae_helpers import tiny_files
from tests.tolerances import rel_l2
from wan_runtime.errors import InputError
from wan_runtime.models.vae_loading import load_vae
from wan_runtime.models.vae_tiling import decode_tiled, tile_starts

# Measured on the tiny random models below (seeded, so stable): 2.1 0.112, 2.2 0.223. Random
# weights make the decoder's middle attention and deep conv stack mix the whole frame, so this is
# far above what tiling costs with trained weights; the bounds leave ~35% headroom.
TILED_VS_UNTILED = {"2.1": 0.15, "2.2": 0.30}
# (latent height, width), tile size and overlap in pixels.
TILING = {"2.1": ((8, 12), 64, 16), "2.2": ((6, 8), 96, 32)}


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    return {version: load_vae(path) for version, path in tiny_files(tmp_path_factory.mktemp("vae")).items()}


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_tiled_decode_error_is_bounded(vaes, version):
    vae = vaes[version]
    size, tile, overlap = TILING[version]
    z = torch.randn(vae.z_dim, 2, *size, generator=torch.Generator().manual_seed(0))
    untiled = vae.decode([z])[0]
    tiled = vae.decode([z], tiled=True, tile_size=tile, tile_overlap=overlap)[0]
    assert tiled.shape == untiled.shape and float(tiled.abs().max()) <= 1
    assert 0 < rel_l2(tiled, untiled) <= TILED_VS_UNTILED[version]


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("tile", [4, 10**10], ids=["4-latents", "1e10-latents"])
def test_one_tile_covering_the_frame_is_the_untiled_decode(vaes, version, tile):
    """However large the tile: nothing is sized by it (a blending ramp of 10**10 latents would not
    fit in memory)."""
    vae = vaes[version]
    z = torch.randn(vae.z_dim, 2, 2, 3, generator=torch.Generator().manual_seed(1))
    stride = vae.spatial_stride
    tiled = vae.decode([z], tiled=True, tile_size=tile * stride, tile_overlap=tile // 4 * stride)
    assert torch.equal(tiled[0], vae.decode([z])[0])


def test_blending_reproduces_a_local_decoder_exactly():
    """A decoder without spatial context (nearest upsampling) must come out of the tiles and the
    blend unchanged: the weights of every pixel sum to one, and no tile is misplaced."""
    model = SimpleNamespace(spatial_stride=4, decode=lambda z, _: F.interpolate(z, scale_factor=(1, 4, 4)))
    z = torch.randn(1, 3, 2, 13, 17, dtype=torch.float64)
    out = decode_tiled(model, z, tile=6, overlap=2)
    assert torch.allclose(out, model.decode(z, None).float(), atol=1e-6)


def test_on_the_meta_device_each_kind_of_tile_decodes_once():
    """The memory estimate's walk: a tile of the same edges as one before holds what that one held
    (tests/pipelines/test_activation_memory.py compares the counts with the full walk's)."""
    shapes = []

    def decode(z, _):
        shapes.append(tuple(z.shape))
        return F.interpolate(z, scale_factor=(1, 4, 4))

    model = SimpleNamespace(spatial_stride=4, decode=decode)
    for device, tiles in (("cpu", 3 * 7), ("meta", 3 * 3)):  # first, middle and last rows and columns
        shapes.clear()
        out = decode_tiled(model, torch.zeros(1, 3, 2, 20, 40, device=device), tile=8, overlap=2)
        assert shapes == [(1, 3, 2, 8, 8)] * tiles and out.shape == (1, 3, 2, 80, 160)


def test_tile_starts_cover_with_overlap():
    assert tile_starts(5, 8, 2) == [0]
    assert tile_starts(13, 6, 2) == [0, 4, 7]
    starts = tile_starts(90, 64, 16)
    assert starts[0] == 0 and starts[-1] + 64 == 90


@pytest.mark.parametrize(("tile", "overlap"), [(60, 16), (64, 12), (64, 0), (64, 40)])
def test_bad_tile_sizes_are_rejected(vaes, tile, overlap):
    z = torch.zeros(16, 1, 8, 8)
    with pytest.raises(InputError, match="tile_size"):
        vaes["2.1"].decode([z], tiled=True, tile_size=tile, tile_overlap=overlap)
