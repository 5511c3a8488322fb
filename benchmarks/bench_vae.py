"""The VAEs' decode, whole frames against tiles (``--vae_tiling``), and the encode of i2v-A14B's
conditioning video: time, peak device memory and how far the tiled decode is from the whole one,
random weights, one process.

    python -m benchmarks.bench_vae          # CPU: narrow VAEs on small frames, float32 (checks
                                            # that it runs; the memory columns need a GPU)
    python -m benchmarks.bench_vae --gpu    # the release widths at 720p, 81 frames, bfloat16

Rows: ``decode`` (``tile`` 0: whole frames, else the tile size in pixels), and ``encode`` of the
video i2v-A14B encodes (the image, then black frames) with the Wan2.1 VAE. Columns: the median
time ``ms``, the peak memory allocated and reserved while it runs (``peak_alloc_GiB``,
``peak_reserved_GiB``, the weights included), the peak ``--dry_run`` estimates for it
(``estimate_GiB``: a lower bound of ``peak_alloc_GiB``), and for tiles ``rel_l2``, the relative L2 distance
of the tiled video from the whole-frame one (random weights mix the frame more than trained ones
may).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.common import median_seconds, run_cases
from wan_runtime.checks import DEFAULT_VAE_TILE
from wan_runtime.distributed.row_split import RowSplit
from wan_runtime.models import WanVAE, vae2_1, vae2_2
from wan_runtime.models.vae_autoencoder import CausalAutoencoder
from wan_runtime.models.vae_loading import codec
from wan_runtime.pipelines.activation_memory import decode_work, encode_work
from wan_runtime.pipelines.live_bytes import peak_bytes
from wan_runtime.pipelines.memory_plan import module_bytes
from wan_runtime.tiny_checkpoints.vae import randomize

_GIB = 2**30


@dataclass(frozen=True)
class Case:
    """``op`` (``decode`` or ``encode``) with the Wan ``version`` VAE of the widths ``dims`` on
    ``frames`` frames of ``width`` x ``height``; ``tile`` the decode's tile size (0: whole)."""

    op: str
    version: str
    dims: tuple[int, ...]
    width: int
    height: int
    frames: int
    tile: int = 0


def _model(case: Case) -> CausalAutoencoder:
    return vae2_1.build_vae21(*case.dims) if case.version == "2.1" else vae2_2.build_vae22(*case.dims)


def build(case: Case, device: torch.device, dtype: torch.dtype) -> WanVAE:
    """A random VAE of ``case``'s version and widths, on ``device`` in ``dtype``."""
    return codec(randomize(_model(case), seed=0).to(device, dtype))


def estimated_peak(case: Case, dtype: torch.dtype, row_split: RowSplit | None = None) -> int:
    """The bytes ``case`` holds at its peak, at least, as ``--dry_run`` counts them
    (``wan_runtime.pipelines.activation_memory``): the weights, and the tensors of the same work
    on the meta device (split as ``row_split``, a planned one)."""
    with torch.device("meta"):
        vae = codec(_model(case).to(dtype))
    vae.row_split = row_split
    if case.op == "encode":
        work = peak_bytes(encode_work, vae, case.frames, case.height, case.width)
    else:
        work = peak_bytes(decode_work, vae, _latent_shape(case, vae), case.tile)
    return module_bytes(vae.model) + work


def _latent_shape(case: Case, vae: WanVAE) -> tuple[int, int, int, int]:
    """The latent of ``case``'s frames: [z_dim, T, h, w]."""
    stride, frames = vae.spatial_stride, (case.frames - 1) // vae.temporal_stride + 1
    return vae.z_dim, frames, case.height // stride, case.width // stride


def measured(run: Callable[[], list[torch.Tensor]], device: torch.device) -> tuple[list[torch.Tensor], dict]:
    """What one ``run`` returns, and the peak memory it allocated and reserved (none on the CPU)."""
    if device.type != "cuda":
        return run(), {}
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    result = run()
    torch.cuda.synchronize(device)
    return result, {"peak_alloc_GiB": round(torch.cuda.max_memory_allocated(device) / _GIB, 2),
                    "peak_reserved_GiB": round(torch.cuda.max_memory_reserved(device) / _GIB, 2)}


def runner(case: Case, vae: WanVAE, device: torch.device) -> Callable[[], list[torch.Tensor]]:
    """``case``'s work with ``vae`` on its inputs (random, the same in every process)."""
    generator = torch.Generator().manual_seed(0)
    if case.op == "encode":
        video = torch.zeros(3, case.frames, case.height, case.width, device=device)
        video[:, 0] = torch.rand(3, case.height, case.width, generator=generator) * 2 - 1
        return lambda: vae.encode([video])
    z = torch.randn(_latent_shape(case, vae), generator=generator).to(device)
    return lambda: vae.decode([z], tiled=case.tile > 0, tile_size=case.tile or DEFAULT_VAE_TILE)


def run_case(case: Case, device: torch.device, dtype: torch.dtype, repeat: int,
             whole: dict[Case, torch.Tensor]) -> dict:
    """Time and measure ``case``; a whole-frame decode's video is kept in ``whole`` for the tiled
    cases of the same VAE and size that follow it."""
    run = runner(case, build(case, device, dtype), device)
    row = {"op": case.op, "vae": case.version, "size": f"{case.width}*{case.height}", "frames": case.frames,
           "tile": case.tile, "dtype": str(dtype).removeprefix("torch.")}
    # The measured run is the timing's warm-up too.
    [out], peaks = measured(run, device)
    row.update(peaks, ms=round(median_seconds(run, device, warmup=0, repeat=repeat) * 1e3, 1),
               estimate_GiB=round(estimated_peak(case, dtype) / _GIB, 2))
    if case.op == "decode":
        pixels = out
        key = Case("decode", case.version, case.dims, case.width, case.height, case.frames)
        if case.tile == 0:
            whole[key] = pixels.cpu()
        elif key in whole:
            reference = whole[key]
            row["rel_l2"] = round(float((pixels.cpu() - reference).norm() / reference.norm()), 4)
    return row


def cases(gpu: bool) -> list[Case]:
    """The release widths at 720p, 81 frames (``gpu``), else narrow VAEs on small frames."""
    if gpu:
        sizes = {"2.1": ((96,), 1280, 720), "2.2": ((160, 256), 1280, 704)}
        frames, tiles = 81, (0, DEFAULT_VAE_TILE, DEFAULT_VAE_TILE // 2)
    else:
        sizes = {"2.1": ((16,), 256, 128), "2.2": ((16, 24), 256, 128)}
        frames, tiles = 5, (0, 128)
    decodes = [Case("decode", version, dims, width, height, frames, tile)
               for version, (dims, width, height) in sizes.items() for tile in tiles]
    dims, width, height = sizes["2.1"]
    return [*decodes, Case("encode", "2.1", dims, width, height, frames)]


def vae_parser(doc: str, repeat: int, repeat_help: str) -> argparse.ArgumentParser:
    """The VAE benchmarks' arguments: ``--gpu``, ``--repeat`` (default ``repeat``: ``repeat_help``)
    and ``--out-dir``; ``doc`` is the module's docstring."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="the release widths at 720p on GPUs in bfloat16")
    parser.add_argument("--repeat", type=int, default=repeat, help=f"{repeat_help} (default {repeat})")
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    return parser


def main() -> None:
    args = vae_parser(__doc__, 1, "timed runs after the measured one").parse_args()
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = torch.bfloat16 if args.gpu else torch.float32
    whole: dict[Case, torch.Tensor] = {}
    columns = ["op", "vae", "size", "frames", "tile", "dtype", "ms", "peak_alloc_GiB", "peak_reserved_GiB",
               "estimate_GiB", "rel_l2"]
    with torch.inference_mode():
        run_cases("bench_vae", device, cases(args.gpu),
                  lambda case: run_case(case, device, dtype, args.repeat, whole), columns, args.out_dir)


if __name__ == "__main__":
    main()
