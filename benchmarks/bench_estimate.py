"""How long a run takes to work out a video's peak memory before it loads anything
(``estimate_memory`` on the meta device, which every run, ``--dry_run`` and ``--fit_memory`` wait
for): each task's release video, decoded whole and in ``--vae_tiling``'s 512-pixel tiles,
timed on this machine's CPU (the estimate never touches the GPU), the best of ``--repeat`` runs.

    python -m benchmarks.bench_estimate [--repeat N] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import print_table, save_results
from benchmarks.weight_plans import release_plan, release_video
from wan_runtime.checks import DEFAULT_VAE_TILE
from wan_runtime.pipelines import VideoShape, estimate_memory
from wan_runtime.pipelines.memory_plan import _GIB
from wan_runtime.tasks import task_spec


def time_estimate(task: str, tile: int, repeat: int, video: VideoShape | None = None) -> dict:
    """The row of ``task``'s release video (or ``video``) decoded whole (``tile`` 0) or in tiles:
    the fewest seconds of ``repeat`` estimates, and the peak they found."""
    plan = release_plan(task, offload_model=False)
    video = video or release_video(task, tile)
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        estimate = estimate_memory(plan, task_spec(task), video)
        seconds.append(time.perf_counter() - start)
    return {"task": task, "decode": f"tiles of {tile}" if tile else "whole",
            "seconds": round(min(seconds), 2), "peak_GiB": round(estimate.peak / _GIB, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="estimates per video, the fewest seconds kept")
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    args = parser.parse_args()
    rows = []
    for task in ("i2v-A14B", "ti2v-5B", "s2v-14B"):
        for tile in (0, DEFAULT_VAE_TILE):
            rows.append(time_estimate(task, tile, args.repeat))
            print(rows[-1], flush=True)
    print_table(rows, ["task", "decode", "seconds", "peak_GiB"])
    out_dir = Path(args.out_dir) if args.out_dir else None
    print("saved", save_results("bench_estimate", torch.device("cpu"), rows, out_dir))


if __name__ == "__main__":
    main()
