"""Streamed DiT blocks (``--stream_blocks``) against resident ones: forward time, timed in turns,
and peak device memory, same weights and inputs, one process.

    python -m benchmarks.bench_streaming          # CPU size, float32: the copies are no copies there,
                                                  # so this only checks that it runs and is exact
    python -m benchmarks.bench_streaming --gpu    # A14B width, 4 layers (all but the first
                                                  # streamed), 32,760 and 75,600 tokens, bfloat16

Columns: ``resident_ms`` / ``streamed_ms`` and their ratio ``x_resident`` (the streamed time over
the resident one: what streaming costs), the peak memory of each forward (weights included) and
the difference ``saved_GB``, and whether the two outputs are bitwise equal (the script exits 1
after the table where they are not).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from benchmarks.bench_dit import A14B, CPU_SIZE, GRID_480P, GRID_720P, Case, inputs
from benchmarks.common import forward_parser, host_dit, median_seconds_in_turns, run_cases
from wan_runtime.models import WanModel

_GB = 1e9


def peak_bytes(forward, device: torch.device) -> int | None:
    """The peak device memory allocated during one ``forward`` (None on the CPU)."""
    if device.type != "cuda":
        forward()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    forward()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def run_case(case: Case, device: torch.device, dtype: torch.dtype, warmup: int, repeat: int) -> dict:
    resident = host_dit(case.config).eval().set_compute_dtype(dtype)
    streamed = copy.deepcopy(resident).enable_block_streaming(case.config.num_layers, device)
    resident.to(device)
    streamed.resident_modules().to(device)
    args = inputs(case, device)
    models: dict[str, WanModel] = {"resident": resident, "streamed": streamed}
    with torch.no_grad():
        outputs = {name: model(**args) for name, model in models.items()}
        calls = {name: lambda m=model: m(**args) for name, model in models.items()}
        peaks = {name: peak_bytes(call, device) for name, call in calls.items()}
        seconds = median_seconds_in_turns(calls, device, warmup, repeat)
    row = {"dim": case.config.dim, "layers": case.config.num_layers,
           "streamed": len(streamed.block_streaming.indices), "tokens": case.tokens,
           "dtype": str(dtype).removeprefix("torch."), "resident_ms": round(seconds["resident"] * 1e3, 1),
           "streamed_ms": round(seconds["streamed"] * 1e3, 1),
           "x_resident": round(seconds["streamed"] / seconds["resident"], 3),
           "equal": bool(torch.equal(outputs["resident"], outputs["streamed"]))}
    if peaks["resident"] is not None:
        row.update(resident_peak_GB=round(peaks["resident"] / _GB, 2),
                   streamed_peak_GB=round(peaks["streamed"] / _GB, 2),
                   saved_GB=round((peaks["resident"] - peaks["streamed"]) / _GB, 2))
    return row


def main() -> None:
    args = forward_parser(__doc__, "the A14B width on cuda in bfloat16", layers=4).parse_args()
    if args.gpu:
        device, dtype = torch.device("cuda"), torch.bfloat16
        cases = [Case(replace(A14B, num_layers=args.layers), grid) for grid in (GRID_480P, GRID_720P)]
    else:
        device, dtype = torch.device("cpu"), torch.float32
        cases = [Case(replace(CPU_SIZE, num_layers=args.layers), (8, 24, 40))]
    columns = ["dim", "layers", "streamed", "tokens", "dtype", "resident_ms", "streamed_ms", "x_resident",
               "resident_peak_GB", "streamed_peak_GB", "saved_GB", "equal"]
    run_cases("bench_streaming", device, cases,
              lambda case: run_case(case, device, dtype, args.warmup, args.repeat), columns, args.out_dir,
              label=Case.label, checks=lambda row: [] if row["equal"] else ["equal"])


if __name__ == "__main__":
    main()
