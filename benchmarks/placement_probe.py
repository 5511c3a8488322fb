"""Does an op's time at the largest DiT shape depend on where its tensors lie in memory? (GPU only)

    python -m benchmarks.placement_probe --out-dir DIR

At 75,600 x 5,120 (A14B at 720p) the Triton ``gated_residual`` and both backends' float32
``gated_residual_layernorm_modulate`` reached 0.85-0.90 of copy bandwidth on an H100 while every
other op, and the same ops at 32,760 tokens, reached 0.96-1.01; the same op's time also moved by
6% between two sessions' runs with unchanged code. One explanation is placement: the output's
distance from the inputs decides which DRAM channels the three streams meet in. This probe times,
at both lengths of the 5,120 width, each timed like ``bench_kernels`` (graph replays, median):

- ``gated_residual``'s Triton kernel writing into one buffer at several distances after its
  float32 input, and a copy of the same input to the same places;
- the public ``gated_residual`` and ``gated_residual_layernorm_modulate`` on fresh inputs
  allocated after padding allocations of several sizes, so each lies somewhere else.

If placement is the cause, the kernel's and the copy's times vary with the distance and the public
ops' with the padding. If they stay within a percent and short of copy bandwidth, the kernel is
the cause; at copy bandwidth, neither is (the H100 result, ``results/..._s17_placement_probe``).
"""

from __future__ import annotations

import argparse
import functools
import traceback
from pathlib import Path

import torch

import wan_kernels
from benchmarks.bench_kernels import EPS, Inputs, Shape, bench_ms, copy_bandwidth
from benchmarks.common import print_table, save_results
from wan_kernels.triton.gated_residual import launch_into

SHAPES = [Shape(75600, 5120, "per_sample"), Shape(32760, 5120, "per_sample")]
MIB = 2**20
# Distances of the output after the end of the float32 input: adjacent, a few pages, odd sizes
# that no power-of-two interleave divides, and a large round one.
GAPS_MIB = (0, 2, 6, 37, 256, 1024)
PADS_MIB = (0, 2, 37, 1024)
COLUMNS = ["probe", "shape", "placement", "ms", "frac_copy", "copy_ms", "copy_frac"]


def fraction_of_copy(nbytes: int, ms: float, copy_gbps: float) -> float:
    """The bandwidth of ``nbytes`` moved in ``ms`` as a fraction of ``copy_gbps``, to 3 places."""
    return round(nbytes / 1e9 / ms * 1e3 / copy_gbps, 3)


def gap_rows(shape: Shape, device: torch.device, copy_gbps: float) -> list[dict]:
    inputs = Inputs(shape, device)
    n = shape.length * shape.width
    view = (1, shape.length, shape.width)
    buffer = torch.empty(2 * n + max(GAPS_MIB) * MIB // 4, dtype=torch.float32, device=device)
    x = buffer[:n].view(view)
    x.copy_(inputs.residual)
    rows = []
    for gap in GAPS_MIB:
        start = n + gap * MIB // 4
        out = buffer[start:start + n].view(view)
        ms = bench_ms(functools.partial(launch_into, x, inputs.hidden, inputs.gate, out))
        copy_ms = bench_ms(functools.partial(out.copy_, x))
        rows.append({"probe": "kernel into buffer", "shape": shape.label,
                     "placement": f"out {gap} MiB after x", "ms": round(ms, 4),
                     "frac_copy": fraction_of_copy(n * (4 + 2 + 4), ms, copy_gbps),
                     "copy_ms": round(copy_ms, 4),
                     "copy_frac": fraction_of_copy(2 * n * 4, copy_ms, copy_gbps)})
    return rows


def public_op_rows(inputs: Inputs, shape: Shape, placement: str, copy_gbps: float) -> list[dict]:
    n = shape.length * shape.width
    # Bytes an element: float32 x and bfloat16 y read, the float32 results written.
    calls = [
        ("gated_residual", n * (4 + 2 + 4),
         functools.partial(wan_kernels.gated_residual, inputs.residual, inputs.hidden, inputs.gate)),
        ("gated_residual_layernorm_modulate", n * (4 + 2 + 4 + 4),
         functools.partial(wan_kernels.gated_residual_layernorm_modulate, inputs.residual, inputs.hidden,
                           inputs.gate, inputs.shift, inputs.scale, EPS)),
    ]
    rows = []
    for name, traffic, call in calls:
        ms = bench_ms(call)
        rows.append({"probe": name, "shape": shape.label, "placement": placement, "ms": round(ms, 4),
                     "frac_copy": fraction_of_copy(traffic, ms, copy_gbps)})
    return rows


def pad_rows(shape: Shape, device: torch.device, copy_gbps: float) -> list[dict]:
    rows = []
    for pad_mib in PADS_MIB:
        pad = torch.empty(pad_mib * MIB, dtype=torch.uint8, device=device)
        rows += public_op_rows(Inputs(shape, device), shape, f"fresh inputs after {pad_mib} MiB", copy_gbps)
        del pad
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    wan_kernels.set_backend("triton")
    copy_gbps = copy_bandwidth(device)
    print(f"copy {copy_gbps:.0f} GB/s")
    rows: list[dict] = []
    for shape in SHAPES:
        for probe in (gap_rows, pad_rows):
            try:
                found = probe(shape, device, copy_gbps)
            except Exception:
                traceback.print_exc()
                continue
            print_table(found, COLUMNS)
            rows += found
            if args.out_dir is not None:
                save_results("placement_probe", device, rows, args.out_dir)


if __name__ == "__main__":
    main()
