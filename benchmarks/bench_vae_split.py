"""The VAE split over processes in bands of rows (``WanVAE.row_split``, as split pipelines run it
under torchrun) against each process working on the whole video: time, peak memory and how far
apart the results are, random weights.

    torchrun --nproc_per_node 2 -m benchmarks.bench_vae_split          # CPU (gloo), one thread each
    torchrun --nproc_per_node 8 -m benchmarks.bench_vae_split --gpu    # a GPU each (NCCL), 720p

The cases: with ``--gpu`` ``bench_vae``'s (the release widths at 720p, 81 frames, bfloat16), on
the CPU the release widths on 128x64 frames, 5 frames, float32. Each process runs each case both ways in
turns: ``alone`` (every process encoding or decoding the whole video, as before the split; on a CPU
each with one thread, so that both ways use the same cores) and ``split``; ``speedup`` is the ratio
of their median times. ``rel_l2``: the split result's relative L2 distance from the whole one.
``peak_*_GiB``: the most memory a process allocated both ways (GPU), and ``estimate_GiB`` what
``--dry_run`` counts for the split (a lower bound). Rank 0 prints and saves the rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from benchmarks.bench_vae import Case, build, cases, estimated_peak, measured, runner, vae_parser
from benchmarks.common import median_seconds_in_turns, run_cases
from wan_runtime.distributed.launch import Launch
from wan_runtime.distributed.row_split import RowSplit

_GIB = 2**30


def cpu_cases() -> list[Case]:
    """The release widths on 128x64 frames, 5 frames: whole frames and 64-pixel tiles."""
    widths = {"2.1": (96,), "2.2": (160, 256)}
    decodes = [Case("decode", version, dims, 128, 64, 5, tile) for version, dims in widths.items()
               for tile in (0, 64)]
    return [*decodes, Case("encode", "2.1", widths["2.1"], 128, 64, 5)]


def run_case(case: Case, device: torch.device, dtype: torch.dtype, repeat: int) -> dict:
    """``case`` alone and split over every process."""
    vae = build(case, device, dtype)
    split = RowSplit.over()
    run = runner(case, vae, device)

    def way(row_split: RowSplit | None) -> Callable[[], list[torch.Tensor]]:
        def go() -> list[torch.Tensor]:
            vae.row_split = row_split
            return run()
        return go

    alone, together = way(None), way(split)
    [whole], alone_peaks = measured(alone, device)
    whole = whole.float().cpu()  # off the device while the split is measured
    [mine], split_peaks = measured(together, device)
    distance = float((mine.float().cpu() - whole).norm() / whole.norm())
    dist.barrier()
    times = median_seconds_in_turns({"alone": alone, "split": together}, device, warmup=0, repeat=repeat)
    row = {"op": case.op, "vae": case.version, "size": f"{case.width}*{case.height}", "frames": case.frames,
           "tile": case.tile, "dtype": str(dtype).removeprefix("torch."), "processes": split.world,
           "alone_ms": round(times["alone"] * 1e3, 1), "split_ms": round(times["split"] * 1e3, 1),
           "speedup": round(times["alone"] / times["split"], 2),
           "rel_l2": float(f"{distance:.2e}"),
           "estimate_GiB": round(estimated_peak(case, dtype, RowSplit.planned(split.world)) / _GIB, 2)}
    for name, peaks in (("alone", alone_peaks), ("split", split_peaks)):
        if peaks:
            row[f"peak_{name}_GiB"] = peaks["peak_alloc_GiB"]
    return row


def main() -> None:
    args = vae_parser(__doc__, 3, "timed runs of each way").parse_args()
    launch = Launch.from_env()
    if not launch.distributed:
        raise SystemExit("start it with torchrun --nproc_per_node N (N of 2 or more), see --help")
    device = torch.device("cuda", launch.local_rank) if args.gpu else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if args.gpu else torch.float32
    launch.start(device)
    todo = cases(True) if args.gpu else cpu_cases()
    columns = ["op", "vae", "size", "frames", "tile", "processes", "alone_ms", "split_ms", "speedup",
               "rel_l2", "peak_alone_GiB", "peak_split_GiB", "estimate_GiB"]
    try:
        with torch.inference_mode():
            if launch.main:
                run_cases(f"bench_vae_split_x{launch.world}", device, todo,
                          lambda case: run_case(case, device, dtype, args.repeat), columns, args.out_dir,
                          keep_going=False)  # the other processes would wait for it in a collective
            else:
                for case in todo:
                    run_case(case, device, dtype, args.repeat)
    finally:
        launch.stop()


if __name__ == "__main__":
    main()
