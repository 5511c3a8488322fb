"""What ``--fit_memory`` chooses for each task's release video on the common GPU sizes, from the
same plan and estimate as ``benchmarks.weight_plans`` (meta-device models of the release
architectures, bf16): computed, not measured. On one GPU, and with ``--gpus N``, on each of N
GPUs of one machine under torchrun, the tokens split over them (``--ulysses_size N``), the
weights whole in each process or sharded (``--dit_fsdp --t5_fsdp``).

    python -m benchmarks.memory_fits [--gpus N ...] [--out-dir DIR]

Columns: the task, the decode (whole frames, or ``--vae_tiling``'s 512-pixel tiles), the GPUs
and whether the weights are sharded, the card (GB as sold) and the budget ``--fit_memory`` alone
would take on it (the GiB torch reports, less about 0.5 GiB of CUDA context and the 1 GiB
``RESERVED``), the placement chosen (or ``no fit``), the most any stage needs with the margin
(``need_GiB``, on each GPU) and that stage (for ``no fit``, under the most frugal placement), and
the most GiB of weights in CPU memory at once under the placement, all the processes' together
(``cpu_GiB``: the fit here assumes the machine has that free).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import print_table, save_results
from benchmarks.weight_plans import DITS, release_plan, release_video
from wan_runtime.checks import DEFAULT_VAE_TILE, PLACEMENT_FLAGS
from wan_runtime.errors import InputError
from wan_runtime.parallel_checks import check_heads_split
from wan_runtime.pipelines import estimate_memory
from wan_runtime.pipelines.host_memory import host_plan
from wan_runtime.pipelines.memory_fit import fit_placement, needed, placements
from wan_runtime.pipelines.memory_plan import _GIB
from wan_runtime.tasks import task_spec

# Cards by the GB they are sold as, and the budget --fit_memory alone would find on each: the
# GiB torch reports (the H100's 79.1, the H200's 139.8; the others' taken as sold) less 1.5.
CARDS = {16: 14.5, 24: 22.5, 32: 30.5, 48: 46.5, 80: 77.6, 141: 138.3}


def fits(task: str, tile: int, gpus: int = 1, sharded: bool = False) -> list[dict]:
    """The rows of ``task``'s release video decoded whole (``tile`` 0) or in tiles, on one GPU or
    on each of ``gpus`` (the tokens split over them; the weights ``sharded`` or not)."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    check_heads_split(DITS[task].num_heads, gpus)
    plan = release_plan(task, offload_model=False, world=gpus, dit_fsdp=sharded, t5_fsdp=sharded)
    video = release_video(task, tile)
    estimates = {video: estimate_memory(plan, task_spec(task), video, False, gpus)}
    rows = []
    for card, budget in CARDS.items():
        row = {"task": task, "decode": f"tiles of {tile}" if tile else "whole", "gpus": gpus,
               "fsdp": sharded, "card_GiB": card, "budget_GiB": budget}
        try:
            fit = fit_placement(plan, estimates, int(budget * _GIB), {})
        except InputError:  # the stage that needs the most under the most frugal placement
            row["placement"] = "no fit"
            *_, frugal = placements(plan, {})
            given = dict(zip(PLACEMENT_FLAGS, frugal, strict=True))
            fit = fit_placement(plan, estimates, 10**15, given)
        else:
            row["placement"] = ", ".join(f"{name} {value}" for name, value in fit.options.items())
        stage = fit.busiest
        row.update({"need_GiB": round(needed(stage) / _GIB, 2), "stage": f"{stage.stage} ({stage.model})",
                    "cpu_GiB": round(host_plan(fit.plan).on_machine(gpus).peak / _GIB, 2)})
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, nargs="+", default=[1],
                        help="GPUs of one machine (torchrun --nproc_per_node); above 1, with and without "
                             "FSDP (default: 1)")
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    args = parser.parse_args()
    launches = [(gpus, sharded) for gpus in args.gpus for sharded in (False, True) if gpus > 1 or not sharded]
    rows = [row for task in ("i2v-A14B", "ti2v-5B", "s2v-14B") for tile in (0, DEFAULT_VAE_TILE)
            for gpus, sharded in launches for row in fits(task, tile, gpus, sharded)]
    columns = ["task", "decode", "gpus", "fsdp", "card_GiB", "budget_GiB", "placement", "need_GiB", "stage",
               "cpu_GiB"]
    print_table(rows, columns)
    out_dir = Path(args.out_dir) if args.out_dir else None
    name = "memory_fits" if args.gpus == [1] else f"memory_fits_x{'_'.join(map(str, args.gpus))}"
    print("saved", save_results(name, torch.device("cpu"), rows, out_dir))


if __name__ == "__main__":
    main()
