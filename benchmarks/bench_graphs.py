"""DiT blocks replayed from CUDA graphs (``--cuda_graphs``) against eager blocks: forward time,
timed in turns, and peak reserved memory, same weights and inputs, one process.

    python -m benchmarks.bench_graphs --gpu   # ti2v-5B and A14B widths, 4 layers, bfloat16, from a
                                              # short 480p clip (3,120 tokens: where launches cost
                                              # most) to 720p (75,600)

CUDA graphs need a GPU: without ``--gpu`` the script says so and stops.

Columns: ``eager_ms`` / ``graphs_ms`` and ``x_eager`` (the eager time over the graphs' one: above 1
the graphs are faster), the peak memory the allocator reserved in each forward (both models'
weights; the eager one's before any graph was captured, the graphed one's with the graphs' pool and
buffers) and ``extra_GB``, the graphs each case captured, and whether the two outputs are
bitwise equal (the script exits 1 after the table where one is not). Each forward is timed after
its graphs are captured (the first two calls).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace

import torch

from benchmarks.bench_dit import A14B, GRID_480P, GRID_720P, TI2V_5B, Case, inputs
from benchmarks.common import forward_parser, host_dit, median_seconds_in_turns, run_cases
from wan_runtime.models.cuda_graphs import StageGraphs

_GB = 1e9
# 17 frames (5 latent frames) at 480p: a few-step or preview run, where kernels are short.
GRID_480P_SHORT = (5, 30, 52)


def peak_reserved(forward, device: torch.device) -> int | None:
    """The most device memory the allocator held during one ``forward`` (None on the CPU), from an
    emptied cache, so that what an earlier forward left cached does not count."""
    if device.type != "cuda":
        forward()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    forward()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_reserved(device)


def run_case(
    case: Case, device: torch.device, dtype: torch.dtype, warmup: int, repeat: int, graphs: StageGraphs
) -> dict:
    """One row: ``case``'s DiT eager and with its blocks run from ``graphs``."""
    eager = host_dit(case.config).eval().set_compute_dtype(dtype).to(device)
    graphed = copy.deepcopy(eager).enable_cuda_graphs(graphs)
    args = inputs(case, device)
    captured = graphs.captures
    calls = {"eager": lambda: eager(**args), "graphs": lambda: graphed(**args)}
    with torch.inference_mode():
        # The eager peak before any graph holds its pool, the graphs' with the pool they hold.
        peaks = {"eager": peak_reserved(calls["eager"], device)}
        want = eager(**args)
        for _ in range(2):  # the first call of its kind runs eagerly, the second is captured
            got = graphed(**args)
        peaks["graphs"] = peak_reserved(calls["graphs"], device)
        seconds = median_seconds_in_turns(calls, device, warmup, repeat)
    row = {"dim": case.config.dim, "layers": case.config.num_layers, "tokens": case.tokens,
           "dtype": str(dtype).removeprefix("torch."), "eager_ms": round(seconds["eager"] * 1e3, 2),
           "graphs_ms": round(seconds["graphs"] * 1e3, 2),
           "x_eager": round(seconds["eager"] / seconds["graphs"], 3), "captures": graphs.captures - captured,
           "equal": bool(torch.equal(got, want))}
    if peaks["eager"] is not None:
        row.update(eager_peak_GB=round(peaks["eager"] / _GB, 2),
                   graphs_peak_GB=round(peaks["graphs"] / _GB, 2),
                   extra_GB=round((peaks["graphs"] - peaks["eager"]) / _GB, 2))
    graphs.release()
    return row


def main() -> None:
    args = forward_parser(__doc__, "ti2v-5B and A14B widths on cuda in bfloat16", layers=4).parse_args()
    if not args.gpu or not torch.cuda.is_available():
        sys.exit("bench_graphs: CUDA graphs need a GPU; run it with --gpu on a machine with one")
    device = torch.device("cuda")
    # 720p at the A14B width first: the row of most memory, never measured yet.
    cases = [Case(replace(config, num_layers=args.layers), grid)
             for config in (A14B, TI2V_5B) for grid in (GRID_720P, GRID_480P, GRID_480P_SHORT)]
    columns = ["dim", "layers", "tokens", "dtype", "eager_ms", "graphs_ms", "x_eager", "eager_peak_GB",
               "graphs_peak_GB", "extra_GB", "captures", "equal"]
    # Graphs of their own for each case: a failed capture leaves its StageGraphs off for good.
    run_cases("bench_graphs", device, cases,
              lambda case: run_case(case, device, torch.bfloat16, args.warmup, args.repeat,
                                    StageGraphs.on(device)),
              columns, args.out_dir, label=Case.label, checks=lambda row: [] if row["equal"] else ["equal"])


if __name__ == "__main__":
    main()
