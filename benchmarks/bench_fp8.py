"""Float8 DiT weights (``--dit_fp8``) against bfloat16 ones: the weights' memory, forward time
(timed in turns, eager and with the blocks compiled) and error against a float32 forward, same
random weights and inputs, one process.

    python -m benchmarks.bench_fp8            # CPU size (dim 512, 4 layers): the memory and error
                                              # columns; its times say nothing of a GPU's
    python -m benchmarks.bench_fp8 --gpu      # real widths (5120 / 3072), 2 layers, 32,760 and
                                              # 75,600 tokens
    python -m benchmarks.bench_fp8 --compile  # also both with the blocks compiled

Columns: ``bf16_MB`` / ``fp8_MB`` the model's weights (and scales); ``bf16_ms`` / ``fp8_ms`` and
``x_bf16`` (the float8 time over the bfloat16 one: what rebuilding each weight before its product
costs); with ``--compile`` the same compiled (``c_*``); ``err_bf16`` / ``err_fp8`` the relative L2
error of each output against the float32 forward. Random weights are not trained ones: what
float8 does to a real checkpoint's video is measured on that checkpoint (``benchmarks.cache_quality
--dit_fp8``).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from benchmarks.bench_dit import A14B, CPU_SIZE, GRID_480P, GRID_720P, TI2V_5B, Case, inputs
from benchmarks.common import forward_parser, host_dit, median_seconds_in_turns, run_cases
from tests.tolerances import rel_l2
from wan_runtime.models.compilation import compile_blocks
from wan_runtime.pipelines.memory_plan import module_bytes

_MB = 1e6


def run_case(case: Case, device: torch.device, dtype: torch.dtype, warmup: int, repeat: int,
             compiled: bool = False) -> dict:
    base = host_dit(case.config).eval()
    fp8 = copy.deepcopy(base).store_weights_in_fp8().set_compute_dtype(dtype).to(device)
    args = inputs(case, device)
    with torch.no_grad():
        truth = base.to(device)(**args)
        models = {"bf16": base.set_compute_dtype(dtype), "fp8": fp8}
        row = {"model": case.config.model_type, "dim": case.config.dim, "layers": case.config.num_layers,
               "tokens": case.tokens, "dtype": str(dtype).removeprefix("torch.")}
        for name, model in models.items():
            row[f"{name}_MB"] = round(module_bytes(model) / _MB, 2)
            row[f"err_{name}"] = f"{rel_l2(model(**args), truth):.2e}"
        del truth
        calls = {name: lambda m=model: m(**args) for name, model in models.items()}
        seconds = median_seconds_in_turns(calls, device, warmup, repeat)
        row.update(bf16_ms=round(seconds["bf16"] * 1e3, 1), fp8_ms=round(seconds["fp8"] * 1e3, 1),
                   x_bf16=round(seconds["fp8"] / seconds["bf16"], 3))
        if compiled:
            torch._dynamo.reset()
            for model in models.values():
                compile_blocks(model)  # in place: ``calls`` now run the compiled blocks
            seconds = median_seconds_in_turns(calls, device, warmup + 1, repeat)
            row.update(c_bf16_ms=round(seconds["bf16"] * 1e3, 1), c_fp8_ms=round(seconds["fp8"] * 1e3, 1),
                       c_x_bf16=round(seconds["fp8"] / seconds["bf16"], 3))
    return row


def main() -> None:
    parser = forward_parser(__doc__, "real widths on cuda", layers=2, gpu_layers_only=True)
    parser.add_argument("--compile", action="store_true", help="also both with the blocks compiled")
    args = parser.parse_args()
    if args.gpu:
        device = torch.device("cuda")
        cases = [Case(replace(cfg, num_layers=args.layers), grid)
                 for cfg in (A14B, TI2V_5B) for grid in (GRID_480P, GRID_720P)]
    else:
        device = torch.device("cpu")
        cases = [Case(CPU_SIZE, (8, 24, 40))]
    columns = ["model", "dim", "layers", "tokens", "dtype", "bf16_MB", "fp8_MB", "err_bf16", "err_fp8",
               "bf16_ms", "fp8_ms", "x_bf16"]
    if args.compile:
        columns += ["c_bf16_ms", "c_fp8_ms", "c_x_bf16"]
    run_cases("bench_fp8", device, cases,
              lambda case: run_case(case, device, torch.bfloat16, args.warmup, args.repeat, args.compile),
              columns, args.out_dir, label=Case.label)


if __name__ == "__main__":
    main()
