"""The ``wan_kernels`` GPU backends' ops against their plain-torch references, eager and compiled (GPU only).

    python -m benchmarks.bench_kernels --out-dir DIR [--backends triton,cuda] [--shapes 75600x5120,...]

Each op runs on every backend of ``--backends`` that is available (``cuda``, the CUDA C++
extension, is built first if needed), one row per backend.

Shapes are the DiT's: C 5120 (A14B, per-sample modulation) and 3072 (TI2V-5B, per-token modulation)
at L 32,760 and 75,600 tokens (480p / 720p), one sample, bfloat16 activations and the float32
residual stream. Each op is first checked against the eager reference at that shape (max error
relative to the reference's largest magnitude, relative L2, and the test suite's tolerance), then
timed as the runtime runs it, captured in a CUDA graph: the graph's replays are timed by
``triton.testing.do_bench`` (median, L2 flushed between runs), so the time is the device's alone.
The host's cost of one eager call (argument checks, dispatch, launches) is measured apart, queued
behind a GPU sleep (``ours_host_us``, ``compile_host_us``). Each op is timed a second time after its
references (``ours_ms_again``), which tells a slow moment of the run from a slow kernel, and the
row's peak of reserved GPU memory is kept (``peak_reserved_GB``). Bandwidth is the op's minimal DRAM
traffic over its time, also as a fraction of a large device-to-device copy measured in the same run
(``frac_copy``) and of a copy moving as many bytes as the op, timed alike
(``frac_copy_same_bytes``): ``do_bench`` zeroes 256 MB before each call, so every timed call starts
with an L2 cache full of dirty lines; whatever writing them back costs is about fixed, so it would
weigh on a 50 us kernel and hardly on the large copy. The compiled references' generated source, and
the launch configuration Inductor's autotuning chose for each of their kernels at each shape (block
sizes, warps, stages: what it found fastest, beside our geometries), go to ``bench_kernels_inductor``
beside the results.

``--sweep`` also times the Triton kernels under other launch geometries (the row kernels'
``wan_kernels.triton.launch.RowConfig``: tokens per program, whole, split or chunked rows, chunk
walks pipelined or not, warps, and for the relative errors one launch and programs per SM; the
elementwise kernels' ``BlockConfig``: elements and warps a program) at one length per width, right
after that shape's op rows, each checked like the ops, with its time against the default geometry's
and the compiled reference's: the data for choosing ``row_config``'s and ``block_config``'s
defaults. Only the ops whose default falls short of ``SWEEP_BELOW`` of copy bandwidth or of the
compiled reference's speed are swept.

Then whole blocks at the same shapes (``--no-blocks`` skips them), each against its unfused self:
one ``wan_runtime`` ``DiTBlock`` in bfloat16 on backend ``torch`` against ``triton``, and one
diffusers ``WanTransformerBlock`` as diffusers runs it against after
``wan_kernels.integrations.diffusers.apply``; ``rel_l2`` is the fused output's relative L2 error
against the unfused one.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import statistics
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import wan_kernels
from benchmarks.bench_dit import A14B, GRID_480P, GRID_720P, TI2V_5B, Case
from benchmarks.bench_dit import inputs as dit_inputs
from benchmarks.common import median_seconds, print_table, save_results
from tests.kernels.tolerances import REDUCTION_RTOL, assert_matches
from tests.tolerances import rel_l2
from wan_kernels import reference
from wan_runtime.tiny_checkpoints import random_dit

EPS = 1e-6
HEAD_DIM = 128
COPY_BYTES = 2 << 30


@dataclass(frozen=True)
class Shape:
    length: int
    width: int
    modulation: str

    @property
    def size(self) -> str:
        return f"{self.length}x{self.width}"

    @property
    def label(self) -> str:
        return f"{self.size} {self.modulation}"


# Both widths first, so the compiled baselines are built (once per width) before the time budget runs low.
SHAPES = [Shape(32760, 5120, "per_sample"), Shape(75600, 3072, "per_token"),
          Shape(75600, 5120, "per_sample"), Shape(32760, 3072, "per_token")]


def select_shapes(sizes: str) -> list[Shape]:
    """The ``SHAPES`` named by comma-separated ``LENGTHxWIDTH`` in ``sizes``, in that order."""
    by_size = {shape.size: shape for shape in SHAPES}
    names = [name.strip() for name in sizes.split(",") if name.strip()]
    unknown = [name for name in names if name not in by_size]
    if unknown or not names:
        raise ValueError(f"--shapes: {', '.join(unknown) or 'none given'} is not a benchmark shape; "
                         f"choose from {', '.join(by_size)}")
    return [by_size[name] for name in names]


class Inputs:
    """Seeded DiT-like tensors of one shape on the GPU."""

    def __init__(self, shape: Shape, device: torch.device) -> None:
        g = None if device.type == "meta" else torch.Generator(device).manual_seed(0)
        full = (1, shape.length, shape.width)
        row = full if shape.modulation == "per_token" else (1, 1, shape.width)

        def randn(size: tuple[int, ...], dtype: torch.dtype = torch.float32, scale: float = 1.0):
            if device.type == "meta":  # shapes only, for benchmarks.kernel_resources
                return torch.empty(size, dtype=dtype, device=device)
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
    """One op case; ``args`` gives every argument of the op's custom-op signature, so the same tuple
    calls the public op and a backend's implementation (``dispatch.implementation``)."""

    name: str
    ours: Callable
    reference: Callable
    args: Callable[[Inputs], tuple]
    rounded_through: torch.dtype = torch.float32
    token_stride: int = 1


OPS = [
    Op("layernorm_modulate", wan_kernels.layernorm_modulate, reference.layernorm_modulate,
       lambda t: (t.hidden, t.shift, t.scale, EPS, True, torch.float32), torch.bfloat16),
    Op("gated_residual", wan_kernels.gated_residual, reference.gated_residual,
       lambda t: (t.residual, t.hidden, t.gate)),
    Op("gated_residual_layernorm_modulate", wan_kernels.gated_residual_layernorm_modulate,
       reference.gated_residual_layernorm_modulate,
       lambda t: (t.residual, t.hidden, t.gate, t.shift, t.scale, EPS, torch.float32)),
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


def captured(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    """``fn`` captured in a CUDA graph, after one call on a side stream (which compiles Triton
    kernels and fills the allocator outside the capture, as PyTorch's CUDA graph notes ask)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def eager_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of ``fn`` called as it is (Triton's do_bench, L2 cache flushed between
    runs): the one timer of the ops' graphs and of the copy, so both are timed alike."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=40, return_mode="median")


def bench_ms(fn: Callable[[], object]) -> float:
    """Median device milliseconds of one call of ``fn``: its CUDA graph's replays (the runtime's
    steps run as graphs) timed by ``eager_ms``. Timing the eager call instead would count the
    host's dispatch wherever it outlasts the flush queued before it; ``host_us`` measures that
    dispatch apart."""
    graph = captured(fn)
    try:
        return eager_ms(graph.replay)
    finally:
        graph.reset()
        # A graph's private memory pool stays reserved after the reset until the allocator empties
        # its cache, so at 75,600 x 5120, where a row's graphs take gigabytes each, a run could
        # fill the GPU within a few rows and allocate on through the allocator's out-of-memory
        # path: a suspect for the rows there that ran 5-17% slow in two sessions, not confirmed
        # (``ours_ms_again`` and ``peak_reserved_GB`` are there to tell). Emptied after each
        # timing, every timing starts from the same memory.
        torch.cuda.empty_cache()


# Spin cycles queued ahead of ``host_us``'s calls: tens of milliseconds at an H100's clock, far
# longer than the calls take to dispatch, so no call waits for the device.
SLEEP_CYCLES = 100_000_000
HOST_CALLS = 25


def host_us(fn: Callable[[], object]) -> float:
    """Median host microseconds of one eager call of ``fn`` queued behind a long GPU sleep: the
    dispatch cost (checks, dispatch, launches) a caller pays per call, which the device time hides
    wherever the GPU has work queued."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    times = []
    for _ in range(HOST_CALLS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return statistics.median(times) * 1e6


@functools.cache
def copy_bandwidth(device: torch.device, nbytes: int = COPY_BYTES) -> float:
    """GB/s (read plus write) of a device-to-device copy of ``nbytes``, called eagerly: captured in
    a CUDA graph the copy becomes a memcpy node, which measured 2434 GB/s on an H100 against 3020
    eagerly. The eager call's dispatch (microseconds) hides behind the 256 MB flush queued before
    it, at any size."""
    src = torch.empty(max(1, nbytes // 4), dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = eager_ms(lambda: dst.copy_(src))
    return 2 * src.nbytes / ms / 1e6


@contextmanager
def inductor_launch_configs() -> Iterator[dict[str, str]]:
    """Within the block, the launch configuration each Inductor Triton kernel that runs was
    autotuned to (``XBLOCK: 1, R0_BLOCK: 2048, num_warps: 8, ...``), by kernel name."""
    from unittest import mock

    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    configs: dict[str, str] = {}
    original = CachingAutotuner.run

    def run(self: CachingAutotuner, *args: object, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)
        # Read defensively: these are Inductor's internals (torch 2.13 here, 2.11 on the GPU
        # machine), and a change there must not cost the op's row its compiled timing.
        launchers = getattr(self, "launchers", None) or []
        if len(launchers) == 1:  # autotuned (or given one configuration)
            name = getattr(getattr(self, "fn", None), "__name__", "?")
            configs[name] = str(getattr(launchers[0], "config", "?"))
        return result

    with mock.patch.object(CachingAutotuner, "run", run):
        yield configs


def inductor_code(compiled: Callable, args: tuple) -> list[str]:
    """Call ``compiled`` on ``args``, returning the source Inductor generates in that call (none
    where it reuses a compiled graph). Inductor's own ``run_and_get_code`` resets Dynamo first,
    which would compile every compiled reference again."""
    from unittest import mock

    from torch._inductor.graph import GraphLowering

    code: list[str] = []
    with mock.patch.object(GraphLowering, "save_output_code", code.append):
        compiled(*args)
    return code


def run_op(op: Op, shape: Shape, inputs: Inputs, compiled: Callable | None, copy_gbps: float) -> dict:
    args = op.args(inputs)
    on_gpu = args[0].is_cuda
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(args[0].device)
    ours, expected = op.ours(*args), op.reference(*args)
    max_rel, rel_l2, verdict = check(op, ours, expected)
    traffic = traffic_bytes(op, args, ours)
    gigabytes = traffic / 1e9
    del ours, expected
    row = {"op": op.name, "shape": shape.label, "max_rel_err": f"{max_rel:.2e}", "rel_l2": f"{rel_l2:.2e}",
           "check": verdict, "GB": round(gigabytes, 3)}
    ours_ms = bench_ms(lambda: op.ours(*args))
    eager_ms = bench_ms(lambda: op.reference(*args))
    ours_gbps = gigabytes / ours_ms * 1e3
    row.update(ours_ms=round(ours_ms, 4), eager_ms=round(eager_ms, 4), ours_GBps=round(ours_gbps, 1),
               frac_copy=round(ours_gbps / copy_gbps, 3),
               frac_copy_same_bytes=round(ours_gbps / copy_bandwidth(args[0].device, traffic // 2), 3),
               x_eager=round(eager_ms / ours_ms, 2), ours_host_us=round(host_us(lambda: op.ours(*args)), 1))
    if compiled is not None:
        # The reference's first call at this shape: at the first, Inductor generates its code and
        # autotunes its kernels; at the others, the configurations say what those kernels run with.
        with inductor_launch_configs() as configs:
            code = inductor_code(compiled, args)
        compile_ms = bench_ms(lambda: compiled(*args))
        row.update(compile_ms=round(compile_ms, 4), compile_GBps=round(gigabytes / compile_ms * 1e3, 1),
                   x_compile=round(compile_ms / ours_ms, 2),
                   compile_host_us=round(host_us(lambda: compiled(*args)), 1))
        if code or configs:
            row["inductor"] = {"code": "\n".join(code), "configs": configs}
    # Ours once more, after the references: at 75,600 x 5120 some ops' first time in a row ran 5-17%
    # over what the same kernel took alone in a fresh process, while the compiled reference timed
    # after it did not (results/..._s17_placement_probe); a second time that differs from the first
    # shows the slowdown is of the run's moment, not of the kernel.
    row["ours_ms_again"] = round(bench_ms(lambda: op.ours(*args)), 4)
    if on_gpu:
        row["peak_reserved_GB"] = round(torch.cuda.max_memory_reserved(args[0].device) / 1e9, 1)
    return row


# The kernels that were below 80% of copy bandwidth on the H200 at their first defaults, or slower
# than the compiled reference on the H100, and the geometries tried for them. Row kernels: whole
# rows (one padded tile, or split in two tiles: 4096 + 1024 lanes at C = 5120), and chunks of 512 to
# 2048 channels with 1 to 8 tokens a program. Elementwise kernels: 4 to 16 elements a thread (4
# float32 values are one 16-byte access; the default's 8 make Triton move a float32 result through
# shared memory to store it, which measured no slower on an H100). Only ops whose default reaches
# less than SWEEP_BELOW of copy bandwidth, or is slower than the compiled reference, in the same run
# are swept (``ops_to_sweep``). The strided ``rel_l1`` runs the plain one's kernel but reads a
# quarter of the rows, so it is swept apart (0.61-0.82 of copy timed as graph replays; an earlier
# sweep of it, timed eagerly, mostly measured the run).
SWEEP_OPS = ("layernorm_modulate", "gated_residual_layernorm_modulate", "qk_rmsnorm_rope", "rel_l1",
             "rel_l1[stride 4]", "gated_residual", "residual_apply", "residual_capture")
SWEEP_SHAPES = SHAPES[:2]
SWEEP_BELOW = 0.9
# First (untimed as yet, so that a sweep cut short by its deadline has timed them), chunk walks
# pipelined by Triton (``RowConfig.stages``: the next chunks' loads in flight through shared memory
# while one is summed; compiled for sm_90 by Triton 3.9 they keep 4-16 programs an SM, where the
# unpipelined walks reached only 0.55-0.80 of copy bandwidth with one chunk in flight at a time).
SWEEP_GEOMETRIES = [
    dict(chunk=1024, warps=4, stages=2), dict(chunk=1024, warps=4, stages=3),
    dict(chunk=512, tokens=2, warps=4, stages=3), dict(chunk=2048, warps=8, stages=2),
    dict(warps=8), dict(warps=16), dict(split=True, warps=4), dict(split=True, warps=8),
    dict(split=True, tokens=2, warps=4), dict(split=True, tokens=2, warps=8), dict(chunk=1024, warps=4),
    dict(chunk=1024, tokens=2, warps=4), dict(chunk=1024, tokens=4, warps=8),
    dict(chunk=1024, tokens=8, warps=8), dict(chunk=2048, warps=8), dict(chunk=2048, tokens=4, warps=8),
    dict(chunk=512, tokens=2, warps=4),
]
# The relative errors' kernels also in one launch, the last program reducing the partial sums
# (untimed as yet, so first: a sweep cut short by its deadline has timed them), and with a bounded
# grid whose programs take tiles in turn (one reduction and one partial sum a program, not a tile),
# at most as many an SM as are resident (compiled for sm_90 by Triton 3.9: 4 programs of 8 warps,
# 10 of 4 warps and 5 of 8 warps for the last three). Swept before the geometries of every row op.
SWEEP_REDUCTION_GEOMETRIES = [
    dict(chunk=1024, tokens=4, warps=8, one_launch=True),
    dict(chunk=1024, warps=4, stages=3, one_launch=True),
    dict(chunk=512, tokens=2, warps=4, one_launch=True),
    dict(chunk=1024, tokens=4, warps=8, programs_per_sm=4, one_launch=True),
    dict(chunk=1024, tokens=4, warps=8, programs_per_sm=4),
    dict(chunk=1024, tokens=2, warps=4, programs_per_sm=8),
    dict(chunk=2048, tokens=2, warps=8, programs_per_sm=4),
]
SWEEP_BLOCKS = [dict(block=1024, warps=8), dict(block=512, warps=4), dict(block=2048, warps=16),
                dict(block=2048, warps=8), dict(block=4096, warps=8)]


def ops_to_sweep(rows: list[dict], shape: Shape) -> list[str]:
    """The ``SWEEP_OPS`` whose ``triton`` row at ``shape`` in ``rows`` did not reach ``SWEEP_BELOW``
    of copy bandwidth or was slower than the compiled reference (or has no time: failed or not run),
    furthest from copy bandwidth first, so that a sweep cut short by its deadline has spent its
    time where the gap is widest."""
    ours = [row for row in rows if row.get("backend") == "triton" and row["shape"] == shape.label]
    reached = {row["op"] for row in ours
               if row.get("frac_copy", 0.0) >= SWEEP_BELOW and row.get("x_compile", math.inf) >= 1}
    frac = {row["op"]: row.get("frac_copy", 0.0) for row in ours}
    return sorted((name for name in SWEEP_OPS if name not in reached), key=lambda name: frac.get(name, 0.0))


def _geometries(name: str, width: int) -> list:
    """The default launch geometry of the op's Triton kernel ``name`` at ``width``, then the others
    to sweep."""
    from wan_kernels.triton.launch import (
        ELEMENTWISE_OPS,
        REDUCTION_OPS,
        BlockConfig,
        RowConfig,
        block_config,
        row_config,
    )

    if name in ELEMENTWISE_OPS:
        default, others = block_config(name), [BlockConfig(**g) for g in SWEEP_BLOCKS]
    else:
        geometries = SWEEP_REDUCTION_GEOMETRIES * (name in REDUCTION_OPS) + SWEEP_GEOMETRIES
        default, others = row_config(name, width), [RowConfig(**g) for g in geometries]
    return [default, *(c for c in others if c != default)]


def sweep_rows(shape: Shape, inputs: Inputs, copy_gbps: float, deadline: float,
               ops: Sequence[str] = SWEEP_OPS, compile_ms: Mapping[str, float] | None = None) -> list[dict]:
    """Each op of ``ops`` under its default geometry and the others of ``_geometries`` at ``shape``
    (backend ``triton``), until ``deadline`` (``time.perf_counter()``); ``x_compile`` against the
    compiled reference's milliseconds where ``compile_ms`` has the op's."""
    from wan_kernels.triton.launch import configured

    wan_kernels.set_backend("triton")
    rows = []
    by_name = {op.name: op for op in OPS}
    for op in (by_name[name] for name in ops):
        if time.perf_counter() > deadline:
            return rows
        name, args = op.ours.__name__, op.args(inputs)
        expected = op.reference(*args)
        gigabytes = traffic_bytes(op, args, expected) / 1e9
        default_ms = None
        geometries = _geometries(name, shape.width)
        for config in geometries:
            if time.perf_counter() > deadline:
                return rows
            label = config.label + " (default)" * (config == geometries[0])
            row = {"op": op.name, "shape": shape.label, "geometry": label}
            try:
                with configured(name, config):
                    row["max_rel_err"], row["rel_l2"], row["check"] = check(op, op.ours(*args), expected)
                    ms = bench_ms(lambda: op.ours(*args))  # noqa: B023 - called before the loop moves on
            except Exception as error:  # a geometry that cannot compile (too many registers) is a result too
                rows.append({**row, "check": f"ERROR: {type(error).__name__}: {str(error)[:200]}"})
                continue
            default_ms = default_ms or ms
            row.update(ours_ms=round(ms, 4), frac_copy=round(gigabytes / ms * 1e3 / copy_gbps, 3),
                       x_default=round(default_ms / ms, 3))
            if compile_ms and op.name in compile_ms:
                row["x_compile"] = round(compile_ms[op.name] / ms, 2)
            row["max_rel_err"], row["rel_l2"] = f"{row['max_rel_err']:.2e}", f"{row['rel_l2']:.2e}"
            rows.append(row)
            print(f"  sweep {op.name:35s} {shape.label:22s} {row['geometry']:40s} {row['check'][:40]:40s} "
                  f"{ms:.4f} ms  {row['frac_copy']:.3f} of copy  x_compile {row.get('x_compile')}",
                  flush=True)
        del expected
    return rows


def best_geometries(rows: list[dict]) -> list[dict]:
    """The fastest passing geometry of each (op, shape) of a sweep."""
    best: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["op"], row["shape"])
        if row.get("check") == "ok" and (key not in best or row["ours_ms"] < best[key]["ours_ms"]):
            best[key] = row
    return list(best.values())


# The first two SHAPES as models run them: A14B (C 5120, per-sample modulation) at 480p, 32,760
# tokens, and TI2V-5B (C 3072, per-token) at 720p, 75,600 tokens. Building a model's random weights
# takes seconds on the host, so the other two lengths are left to the op rows.
BLOCK_CASES = [Case(A14B, GRID_480P), Case(TI2V_5B, GRID_720P)]
BLOCK_REPEAT = 5


def _on_backend(backend: str, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        wan_kernels.set_backend(backend)
        return fn()

    return run


def gpu_backends(names: str) -> list[str]:
    """The backends of the comma-separated ``names`` that run here (building ``cuda`` if needed)."""
    usable = []
    for name in filter(None, names.split(",")):
        try:
            wan_kernels.set_backend(name)
        except ValueError as error:
            print(f"backend {name} skipped: {error}")
            continue
        usable.append(name)
    return usable


@torch.no_grad()
def compare_blocks(name: str, case: Case, unfused: Callable[[], torch.Tensor],
                   fused: Callable[[], torch.Tensor], device: torch.device) -> dict:
    """Parity, then median milliseconds of ``unfused`` and ``fused`` (one warm-up call each)."""
    modulation = "per_token" if case.config.model_type == "ti2v" else "per_sample"
    label = f"{case.tokens}x{case.config.dim} {modulation}"
    row = {"op": name, "shape": label, "rel_l2": f"{rel_l2(fused(), unfused()):.2e}"}
    unfused_ms = median_seconds(unfused, device, 1, BLOCK_REPEAT) * 1e3
    fused_ms = median_seconds(fused, device, 1, BLOCK_REPEAT) * 1e3
    row.update(eager_ms=round(unfused_ms, 3), ours_ms=round(fused_ms, 3),
               x_eager=round(unfused_ms / fused_ms, 3))
    return row


def dit_block_row(case: Case, device: torch.device, backend: str) -> dict:
    """One ``wan_runtime`` block on the float32 residual stream, weights in bfloat16 (norms and
    modulation float32), on backend ``torch`` against ``backend``."""
    model = random_dit(replace(case.config, num_layers=1)).to(device).set_compute_dtype(torch.bfloat16)
    with torch.no_grad():
        tokens, cond = model.prepare(**dit_inputs(case, device))
    tokens = tokens.float()

    def run() -> torch.Tensor:
        return model.run_blocks(tokens, cond)

    return compare_blocks("DiTBlock", case, _on_backend("torch", run), _on_backend(backend, run), device)


def diffusers_block_row(case: Case, device: torch.device, backend: str) -> dict:
    """One diffusers ``WanTransformerBlock`` in bfloat16 (its ``_keep_in_fp32_modules`` float32, as
    ``from_pretrained`` loads them), diffusers' forward against the applied one on ``backend``."""
    from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock

    from wan_kernels.integrations import diffusers as integration

    c = case.config
    with torch.device(device):
        model = WanTransformer3DModel(
            patch_size=c.patch_size, num_attention_heads=c.num_heads, attention_head_dim=c.dim // c.num_heads,
            in_channels=c.in_dim, out_channels=c.out_dim, text_dim=c.text_dim, freq_dim=c.freq_dim,
            ffn_dim=c.ffn_dim, num_layers=1, eps=c.eps,
        ).eval()
    for name, param in model.named_parameters():
        keep = any(part in model._keep_in_fp32_modules for part in name.split("."))
        param.data = param.data.to(torch.float32 if keep else torch.bfloat16)
    g = torch.Generator(device).manual_seed(0)
    hidden = torch.randn((1, case.tokens, c.dim), generator=g, device=device, dtype=torch.bfloat16)
    context = torch.randn((1, c.text_len, c.dim), generator=g, device=device, dtype=torch.bfloat16)
    # temb as the model's time projection gives it: per token for ti2v, per sample otherwise.
    temb_shape = (1, case.tokens, 6, c.dim) if c.model_type == "ti2v" else (1, 6, c.dim)
    temb = 0.1 * torch.randn(temb_shape, generator=g, device=device, dtype=torch.bfloat16)
    rope = model.rope(torch.empty((1, c.in_dim, *case.grid), device=device))
    block = integration.apply(model).blocks[0]
    args = (hidden, context, temb, rope)
    unfused = lambda: WanTransformerBlock.forward(block, *args)  # noqa: E731 - the class's, not the instance's
    fused = _on_backend(backend, lambda: block(*args))
    return compare_blocks("diffusers WanTransformerBlock", case, unfused, fused, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-blocks", action="store_true", help="skip the whole-block comparison")
    parser.add_argument("--backends", default="triton,cuda", help="comma-separated backends to time")
    parser.add_argument("--compile-budget-s", type=float, default=120.0,
                        help="stop timing the compiled baseline once the run has taken this long")
    parser.add_argument("--sweep", action="store_true", help="time the Triton row kernels' geometries too")
    parser.add_argument("--sweep-budget-s", type=float, default=150.0,
                        help="time limit of the sweep, shared equally by its shapes")
    parser.add_argument("--deadline-s", type=float, default=math.inf,
                        help="start nothing new after this many seconds (results so far are saved)")
    parser.add_argument("--shapes", default=",".join(s.size for s in SHAPES),
                        help="comma-separated LENGTHxWIDTH of the shapes to time, in this order")
    args = parser.parse_args()
    try:
        shapes = select_shapes(args.shapes)
    except ValueError as error:
        parser.error(str(error))
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels needs a CUDA GPU")
    import triton

    device = torch.device("cuda")
    backends = gpu_backends(args.backends)
    start = time.perf_counter()
    deadline = start + args.deadline_s
    copy_gbps = copy_bandwidth(device)
    print(f"{torch.cuda.get_device_name(device)}  torch {torch.__version__}  triton {triton.__version__}  "
          f"device copy {copy_gbps:.0f} GB/s")
    compiled = {op.name: torch.compile(op.reference) for op in OPS}
    rows: list[dict] = []
    sweep: list[dict] = []
    inductor: list[dict] = []  # the compiled references' source and launch configurations by op and shape

    def save() -> None:
        # After every part, so that a run stopped at its time limit keeps what it measured.
        copy_row = {"op": "device_copy", "GBps": round(copy_gbps, 1), "triton": triton.__version__}
        print("wrote", save_results("bench_kernels", device, [*rows, copy_row], args.out_dir), flush=True)
        if sweep:
            print("wrote", save_results("bench_kernels_sweep", device, sweep, args.out_dir), flush=True)
        if inductor:
            print("wrote", save_results("bench_kernels_inductor", device, inductor, args.out_dir), flush=True)

    try:
        for shape in shapes:
            if time.perf_counter() > deadline:
                break
            inputs = Inputs(shape, device)
            for op, backend in itertools.product(OPS, backends):
                if time.perf_counter() > deadline:
                    break
                # The compiled reference is the same for every backend: timed on the first only.
                use_compile = (not args.no_compile and backend == backends[0]
                               and time.perf_counter() - start < args.compile_budget_s)
                wan_kernels.set_backend(backend)
                try:
                    row = run_op(op, shape, inputs, compiled[op.name] if use_compile else None, copy_gbps)
                except Exception as error:  # one failing op must not cost the rest of a short GPU session
                    traceback.print_exc()
                    verdict = f"ERROR: {type(error).__name__}: {error}"
                    row = {"op": op.name, "shape": shape.label, "check": verdict}
                if "inductor" in row:
                    inductor.append({"op": op.name, "shape": shape.label, **row.pop("inductor")})
                rows.append({"backend": backend, **row})
                print(f"  {op.name:45s} {backend:7s} {shape.label:24s} {row.get('check')}  max rel err "
                      f"{row.get('max_rel_err')}  {row.get('ours_ms')} ms  {row.get('frac_copy')} of copy "
                      f"({row.get('frac_copy_same_bytes')} of one as large)  "
                      f"x_compile {row.get('x_compile')}  again {row.get('ours_ms_again')} ms  "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
            save()
            # Swept right after its op rows: the same inputs, and the compiled times just measured.
            if args.sweep and shape in SWEEP_SHAPES and "triton" in backends:
                compile_ms = {row["op"]: row["compile_ms"] for row in rows
                              if row["shape"] == shape.label and "compile_ms" in row}
                shape_deadline = min(time.perf_counter() + args.sweep_budget_s / len(SWEEP_SHAPES), deadline)
                sweep += sweep_rows(shape, inputs, copy_gbps, shape_deadline, ops_to_sweep(rows, shape),
                                    compile_ms)
                wan_kernels.set_backend("auto")
                save()
            del inputs
            torch.cuda.empty_cache()
        for case in [] if args.no_blocks else BLOCK_CASES:
            for block_row, backend in itertools.product((dit_block_row, diffusers_block_row), backends):
                if time.perf_counter() > deadline:
                    break
                try:
                    row = block_row(case, device, backend)
                except Exception as error:  # as above: report it and go on
                    traceback.print_exc()
                    row = {"op": block_row.__name__, "shape": f"{case.tokens}x{case.config.dim}",
                           "check": f"ERROR: {type(error).__name__}: {error}"}
                rows.append({"backend": backend, **row})
                print(f"  {row['op']:45s} {backend:7s} {row['shape']:24s} rel_l2 {row.get('rel_l2')}  "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
                torch.cuda.empty_cache()
    finally:
        # Whatever stopped the run (the deadline, a CUDA fault that fails every later call), the
        # rows so far are printed and saved.
        save()
    columns = ["op", "backend", "shape", "check", "max_rel_err", "rel_l2", "ours_ms", "eager_ms",
               "compile_ms", "ours_ms_again", "peak_reserved_GB", "ours_GBps", "frac_copy",
               "frac_copy_same_bytes", "x_eager", "x_compile", "ours_host_us", "compile_host_us"]
    print_table(rows, columns)
    if sweep:
        print("fastest geometry of each swept op (x_default: speed-up over the default geometry)")
        print_table(best_geometries(sweep), ["op", "shape", "geometry", "ours_ms", "frac_copy", "x_default",
                                             "x_compile"])


if __name__ == "__main__":
    main()
