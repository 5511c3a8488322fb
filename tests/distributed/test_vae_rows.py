"""The VAE split over CPU processes (gloo) in bands of rows (``WanVAE.row_split``): the bands'
exchanges, encodes and decodes matching one process's, and each process's memory counted on the
meta device (``RowSplit.planned``) as its real tensors hold it."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.ranks import run_ranks
from tests.models.vae_helpers import tiny_files
from tests.pipelines.test_activation_memory import real_peak
from tests.tolerances import rel_l2
from wan_runtime.distributed.row_split import RowSplit
from wan_runtime.models.vae_loading import codec, load_vae
from wan_runtime.pipelines.activation_memory import decode_work, encode_work
from wan_runtime.pipelines.live_bytes import peak_bytes

# A band's convolutions have other shapes than the whole frame's, so their float32 sums are blocked
# otherwise: split or not, the tiny VAEs' float32 results are 0.3-1.1e-6 (relative L2, measured)
# from the float64 ones.
FLOAT32_VS_FLOAT64 = 2e-6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_files(tmp_path_factory.mktemp("vae"))


def _exchanges(rank: int) -> None:
    split = RowSplit.over()
    world = split.world
    assert split.bands(world - 1) is None
    bands = split.bands(7)
    assert sum(bands.sizes) == 7 and max(bands.sizes) - min(bands.sizes) <= 1
    assert bands.sizes == tuple(sorted(bands.sizes, reverse=True))
    # A frame with 2 rows per base row, each row holding its index.
    whole = torch.arange(2 * 14 * 3, dtype=torch.float32).view(1, 2, 14, 3)
    mine = bands.own(whole)
    first, count = 2 * bands.start, 2 * bands.sizes[rank]
    assert torch.equal(mine, whole[:, :, first:first + count])
    assert torch.equal(bands.gather(mine), whole)
    padded = torch.nn.functional.pad(whole, (0, 0, 1, 1))
    for above, below in ((1, 1), (0, 1), (1, 0)):
        expected = padded[:, :, first + 1 - above:first + 1 + count + below]
        assert torch.equal(bands.halo(mine, above, below), expected), (above, below)
    with pytest.raises(ValueError, match="not a whole number of rows"):
        bands.own(whole[:, :, :13])


@pytest.mark.parametrize("world", [2, 3])
def test_bands_lend_their_edge_rows_and_gather_whole(world):
    """7 base rows over 2 processes (4 + 3) and 3 (3 + 2 + 2), at 2 rows per base row: each
    process's band, the rows above and below it from its neighbours (zeros at the frame's
    edges), and the whole frame gathered from the bands."""
    run_ranks(_exchanges, world)


def _video(vae, rows: int, frames: int = 5) -> torch.Tensor:
    stride = vae.spatial_stride
    generator = torch.Generator().manual_seed(rows)
    return torch.rand(3, frames, rows * stride, 3 * stride, generator=generator) * 2 - 1


def _as_one_process(rank: int, files: dict, rows: tuple[int, ...]) -> None:
    torch.set_num_threads(1)  # the processes share the machine's cores
    for version, path in files.items():
        vae, exact = load_vae(path), load_vae(path, dtype=torch.float64)
        tile = 4 * vae.spatial_stride
        for latent_rows in rows:
            video = _video(vae, latent_rows)
            z = vae.encode([video])[0]
            x = vae.decode([z])[0]
            exact_z, exact_x = exact.encode([video])[0], exact.decode([z])[0]
            exact_tiled = exact.decode([z], tiled=True, tile_size=tile, tile_overlap=tile // 4)[0]
            tiled = vae.decode([z], tiled=True, tile_size=tile, tile_overlap=tile // 4)[0]
            vae.row_split = RowSplit.over()
            split_z = vae.encode([video])[0]
            split_x = vae.decode([z])[0]
            split_tiled = vae.decode([z], tiled=True, tile_size=tile, tile_overlap=tile // 4)[0]
            vae.row_split = None
            what = (version, latent_rows)
            assert split_z.shape == z.shape and split_x.shape == x.shape == video.shape, what
            if latent_rows < RowSplit.over().world:  # whole frames in every process
                assert torch.equal(split_z, z) and torch.equal(split_x, x), what
            for one, split, exact_one in ((z, split_z, exact_z), (x, split_x, exact_x),
                                          (tiled, split_tiled, exact_tiled)):
                assert rel_l2(one, exact_one) <= FLOAT32_VS_FLOAT64, what
                assert rel_l2(split, exact_one) <= FLOAT32_VS_FLOAT64, what


@pytest.mark.parametrize(("world", "rows"), [(2, (5,)), (3, (5, 2))])
def test_split_encode_and_decode_match_one_process(files, world, rows):
    """Both VAEs, 5 frames of 5 latent rows over 2 processes (3 + 2) and over 3 (2 + 2 + 1),
    and of 2 over 3 (whole frames in each), whole frames and in two tiles of 4 rows (2 + 2, and
    2 + 1 + 1), float32: as close to the float64 results as one process's."""
    run_ranks(_as_one_process, world, files, rows)


def _counts_as_planned(rank: int, files: dict, planned: dict) -> None:
    torch.set_num_threads(1)
    for version, path in files.items():
        vae = load_vae(path)
        vae.row_split = RowSplit.over()
        for name, (work, args) in _works(vae).items():
            assert real_peak(work, vae, *args) == planned[version, name][rank], (version, name)


def _works(vae) -> dict[str, tuple]:
    stride = vae.spatial_stride
    return {"encode": (encode_work, (5, 5 * stride, 3 * stride)),
            "decode": (decode_work, ((vae.z_dim, 2, 5, 3), 0)),
            "decode, 4 rows": (decode_work, ((vae.z_dim, 2, 4, 3), 0)),
            "tiled decode": (decode_work, ((vae.z_dim, 2, 5, 3), 4 * stride))}


def test_each_processs_share_is_counted_as_it_runs(files):
    """The meta device's count of each of 3 processes' encode and decode, with a planned split,
    equals the count of its real tensors; the default planned rank holds the most: rank 1 for
    5 rows (2 + 2 + 1: two neighbours), rank 0 for 4 (2 + 1 + 1: a row more)."""
    planned = {}
    for version, path in files.items():
        meta = codec(load_vae(path).model.to("meta"))
        for name, (work, args) in _works(meta).items():
            counts = []
            for rank in range(3):
                meta.row_split = RowSplit.planned(3, rank)
                counts.append(peak_bytes(work, meta, *args))
            meta.row_split = RowSplit.planned(3)
            assert peak_bytes(work, meta, *args) == max(counts), (version, name)
            meta.row_split = None
            assert max(counts) < peak_bytes(work, meta, *args), (version, name)
            planned[version, name] = counts
    run_ranks(_counts_as_planned, 3, files, planned)


def test_a_planned_split_computes_nothing():
    bands = RowSplit.planned(2).bands(4)
    with pytest.raises(RuntimeError, match=r"a planned split of frames' rows \(RowSplit.planned\)"):
        bands.halo(torch.zeros(1, 1, 2, 3), 1, 1)
    with pytest.raises(ValueError, match="no rank 2"):
        RowSplit.planned(2, 2)
