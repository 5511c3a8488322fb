"""The ``wan_kernels`` Triton ops against their plain-torch references, eager and compiled (GPU only).

    python -m benchmarks.bench_kernels --out-dir DIR

Shapes are the DiT's: C 5120 (A14B, per-sample modulation) and 3072 (TI2V-5B, per-token
modulation) at L 32,760 and 75,600 tokens (480p / 720p), one sample, bfloat16 activations and the
float32 residual stream. Each op is first checked against the eager reference at that shape (max
error relative to the reference's largest magnitude, relative L2, and the test suite's tolerance),
then timed with ``triton.testing.do_bench`` (median, L2 flushed between runs). Bandwidth is the
op's minimal DRAM traffic over its time, also as a fraction of a large device-to-device copy
measured in the same run.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import wan_kernels
from benchmarks.common import print_table, save_results
from tests.kernels.tolerances import REDUCTION_RTOL, assert_matches
from wan_kernels import reference

EPS = 1e-6
HEAD_DIM = 128
COPY_BYTES = 2 << 30


@dataclass(frozen=True)
class Shape:
    length: int
    width: int
    modulation: str

    @property
    def label(self) -> str:
        return f"{self.length}x{self.width} {self.modulation}"


# Both widths first, so the compiled baselines are built (once per width) before the time budget runs low.
SHAPES = [Shape(32760, 5120, "per_sample"), Shape(75600, 3072, "per_token"),
          Shape(75600, 5120, "per_sample"), Shape(32760, 3072, "per_token")]


class Inputs:
    """Seeded DiT-like tensors of one shape on the GPU."""

    def __init__(self, shape: Shape, device: torch.device) -> None:
        g = torch.Generator(device).manual_seed(0)
        full = (1, shape.length, shape.width)
        row = full if shape.modulation == "per_token" else (1, 1, shape.width)

        def randn(size: tuple[int, ...], dtype: torch.dtype = torch.float32, scale: float = 1.0):
            return (torch.randn(size, generator=g, device=device) * scale).to(dtype)

        self.residual, self.residual2 = randn(full), randn(full)
        self.hidden, self.hidden2 = randn(full, torch.bfloat16), randn(full, torch.bfloat16)
        self.gate, self.shift, self.scale = randn(row), randn(row), randn(row, scale=0.5)
        self.weight_q = 1 + randn((shape.width,), scale=0.1)
        self.weight_k = 1 + randn((shape.width,), scale=0.1)
        angles = randn((shape.length, 1, HEAD_DIM // 2), scale=3.0)
        self.cos, self.sin = angles.cos(), angles.sin()
        self.heads = shape.width // HEAD_DIM
        # A symbolic token count lets each compiled baseline serve both lengths of a width.
        for t in (self.residual, self.residual2, self.hidden, self.hidden2, self.cos, self.sin):
            torch._dynamo.maybe_mark_dynamic(t, 1 if t.dim() == 3 and t.shape[0] == 1 else 0)


@dataclass(frozen=True)
class Op:
    name: str
    ours: Callable
    reference: Callable
    args: Callable[[Inputs], tuple]
    rounded_through: torch.dtype = torch.float32
    token_stride: int = 1


OPS = [
    Op("layernorm_modulate", wan_kernels.layernorm_modulate, reference.layernorm_modulate,
       lambda t: (t.hidden, t.shift, t.scale, EPS), torch.bfloat16),
    Op("gated_residual", wan_kernels.gated_residual, reference.gated_residual,
       lambda t: (t.residual, t.hidden, t.gate)),
    Op("gated_residual_layernorm_modulate", wan_kernels.gated_residual_layernorm_modulate,
       reference.gated_residual_layernorm_modulate,
       lambda t: (t.residual, t.hidden, t.gate, t.shift, t.scale, EPS)),
    Op("gated_residual_layernorm_modulate[bf16 out]", wan_kernels.gated_residual_layernorm_modulate,
       reference.gated_residual_layernorm_modulate,
       lambda t: (t.residual, t.hidden, t.gate, t.shift, t.scale, EPS, torch.bfloat16), torch.bfloat16),
    Op("rel_l1", wan_kernels.rel_l1, reference.rel_l1, lambda t: (t.hidden, t.hidden2, 1)),
    Op("rel_l1[stride 4]", wan_kernels.rel_l1, reference.rel_l1, lambda t: (t.hidden, t.hidden2, 4),
       token_stride=4),
    Op("rel_l2", wan_kernels.rel_l2, reference.rel_l2, lambda t: (t.hidden, t.hidden2, 1)),
    Op("residual_apply", wan_kernels.residual_apply, reference.residual_apply,
       lambda t: (t.residual, t.residual2)),
    Op("residual_capture", wan_kernels.residual_capture, reference.residual_capture,
       lambda t: (t.residual2, t.residual)),
    Op("qk_rmsnorm_rope", wan_kernels.qk_rmsnorm_rope, reference.qk_rmsnorm_rope,
       lambda t: (t.hidden, t.hidden2, t.weight_q, t.weight_k, t.cos, t.sin, t.heads, EPS), torch.bfloat16),
]


def _tensors(value: object) -> list[torch.Tensor]:
    items = value if isinstance(value, tuple) else (value,)
    return [t for t in items if isinstance(t, torch.Tensor)]


def traffic_bytes(op: Op, args: tuple, out: object) -> int:
    """Minimal DRAM traffic: every input read once (1/stride of the tokens) and every output written."""
    read = sum(t.numel() * t.element_size() for t in _tensors(args)) // op.token_stride
    return read + sum(t.numel() * t.element_size() for t in _tensors(out))


def check(op: Op, ours: object, expected: object) -> tuple[float, float, str]:
    """Max error relative to the reference's largest magnitude, relative L2, and the verdict."""
    worst_max, worst_l2, verdict = 0.0, 0.0, "ok"
    for a, e in zip(_tensors(ours), _tensors(expected), strict=True):
        diff = (a.double() - e.double())
        worst_max = max(worst_max, float(diff.abs().max() / e.double().abs().max().clamp_min(1e-30)))
        worst_l2 = max(worst_l2, float(diff.norm() / e.double().norm().clamp_min(1e-30)))
        try:
            if e.dim() == 0:
                torch.testing.assert_close(a, e, rtol=REDUCTION_RTOL, atol=0)
            else:
                assert_matches(a, e, op.rounded_through)
        except AssertionError as error:
            verdict = "FAIL: " + " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return worst_max, worst_l2, verdict


def bench_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of ``fn`` (Triton's do_bench, L2 cache flushed between runs)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=40, return_mode="median")


def copy_bandwidth(device: torch.device) -> float:
    """GB/s of a device-to-device copy of ``COPY_BYTES`` (read plus write)."""
    src = torch.empty(COPY_BYTES // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return 2 * COPY_BYTES / ms / 1e6


def run_op(op: Op, shape: Shape, inputs: Inputs, compiled: Callable | None, copy_gbps: float) -> dict:
    args = op.args(inputs)
    ours, expected = op.ours(*args), op.reference(*args)
    max_rel, rel_l2, verdict = check(op, ours, expected)
    gigabytes = traffic_bytes(op, args, ours) / 1e9
    del ours, expected
    row = {"op": op.name, "shape": shape.label, "max_rel_err": f"{max_rel:.2e}", "rel_l2": f"{rel_l2:.2e}",
           "check": verdict, "GB": round(gigabytes, 3)}
    ours_ms = bench_ms(lambda: op.ours(*args))
    eager_ms = bench_ms(lambda: op.reference(*args))
    row.update(ours_ms=round(ours_ms, 4), eager_ms=round(eager_ms, 4),
               ours_GBps=round(gigabytes / ours_ms * 1e3, 1),
               frac_copy=round(gigabytes / ours_ms * 1e3 / copy_gbps, 3),
               x_eager=round(eager_ms / ours_ms, 2))
    if compiled is not None:
        compiled(*args)
        compile_ms = bench_ms(lambda: compiled(*args))
        row.update(compile_ms=round(compile_ms, 4), compile_GBps=round(gigabytes / compile_ms * 1e3, 1),
                   x_compile=round(compile_ms / ours_ms, 2))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--compile-budget-s", type=float, default=120.0,
                        help="stop timing the compiled baseline once the run has taken this long")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels needs a CUDA GPU")
    import triton

    device = torch.device("cuda")
    wan_kernels.set_backend("triton")
    start = time.perf_counter()
    copy_gbps = copy_bandwidth(device)
    print(f"{torch.cuda.get_device_name(device)}  torch {torch.__version__}  triton {triton.__version__}  "
          f"device copy {copy_gbps:.0f} GB/s")
    compiled = {op.name: torch.compile(op.reference) for op in OPS}
    rows = []
    for shape in SHAPES:
        inputs = Inputs(shape, device)
        for op in OPS:
            use_compile = not args.no_compile and time.perf_counter() - start < args.compile_budget_s
            try:
                row = run_op(op, shape, inputs, compiled[op.name] if use_compile else None, copy_gbps)
            except Exception as error:  # one failing op must not cost the rest of a short GPU session
                traceback.print_exc()
                verdict = f"ERROR: {type(error).__name__}: {error}"
                row = {"op": op.name, "shape": shape.label, "check": verdict}
            rows.append(row)
            print(f"  {op.name:45s} {shape.label:24s} {row.get('check')}  max rel err "
                  f"{row.get('max_rel_err')}  ({time.perf_counter() - start:.0f} s)", flush=True)
        del inputs
        torch.cuda.empty_cache()
    columns = ["op", "shape", "check", "max_rel_err", "rel_l2", "ours_ms", "eager_ms", "compile_ms",
               "ours_GBps", "frac_copy", "x_eager", "x_compile"]
    print_table(rows, columns)
    rows.append({"op": "device_copy", "GBps": round(copy_gbps, 1), "triton": triton.__version__})
    print("wrote", save_results("bench_kernels", device, rows, args.out_dir))


if __name__ == "__main__":
    main()
