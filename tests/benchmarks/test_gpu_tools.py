"""The GPU benchmarks' CPU-checkable parts: the Triton geometry sweep runs end to end (in Triton's
interpreter, with a stand-in timer), and the compiled Triton kernels at the DiT's widest real shape
keep their resource properties (no spills, 16-byte global accesses, no shared-memory round trips in
``qk_rmsnorm_rope``), read from code compiled for sm_90 without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import wan_kernels
from benchmarks import bench_kernels
from benchmarks.bench_dit import Case
from wan_runtime.models import DiTConfig

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif("triton" not in wan_kernels.available_backends(),
                                  reason="Triton unavailable here")


@needs_triton
def test_sweep_checks_and_ranks_every_geometry(monkeypatch):
    timed = []

    def fake_ms(fn):
        fn()
        timed.append(fn)
        return float(len(timed))  # each geometry slower than the last: the default wins

    monkeypatch.setattr(bench_kernels, "bench_ms", fake_ms)
    geometries = [dict(tokens=2, chunk=64), dict(chunk=128, warps=2)]
    monkeypatch.setattr(bench_kernels, "SWEEP_GEOMETRIES", geometries)
    monkeypatch.setattr(bench_kernels, "SWEEP_REDUCTION_GEOMETRIES",
                        [dict(tokens=2, chunk=64, programs_per_sm=2),
                         dict(tokens=2, chunk=64, one_launch=True)])
    monkeypatch.setattr(bench_kernels, "SWEEP_BLOCKS", [dict(block=256, warps=2), dict(block=128, warps=4)])
    shape = bench_kernels.Shape(3, 256, "per_sample")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        rows = bench_kernels.sweep_rows(shape, bench_kernels.Inputs(shape, device), 1000.0, float("inf"))
    finally:
        wan_kernels.set_backend("auto")
    # rel_l1, plain and strided, also under the reduction geometries.
    assert len(rows) == 3 * len(bench_kernels.SWEEP_OPS) + 4 == len(timed)
    assert all(row["check"] == "ok" for row in rows), rows
    assert list(dict.fromkeys(row["op"] for row in rows)) == list(bench_kernels.SWEEP_OPS)  # as given
    persistent = [row["op"] for row in rows if "programs an SM" in row["geometry"]]
    assert persistent == ["rel_l1", "rel_l1[stride 4]"]
    assert [row["op"] for row in rows if "one launch" in row["geometry"]] == ["rel_l1", "rel_l1[stride 4]"]
    best = bench_kernels.best_geometries(rows)
    assert sorted(row["op"] for row in best) == sorted(bench_kernels.SWEEP_OPS)
    assert all(row["geometry"].endswith("(default)") and row["x_default"] == 1.0 for row in best)


@needs_triton
def test_every_op_case_runs_and_passes_its_check(monkeypatch):
    """``run_op`` on each of ``OPS`` (the benchmark's arguments, its check, its byte count) at a
    small shape on the triton backend, the compiled baseline included."""
    monkeypatch.setattr(bench_kernels, "bench_ms", lambda fn: (fn(), 1.0)[1])
    monkeypatch.setattr(bench_kernels, "host_us", lambda fn: (fn(), 5.0)[1])
    copies = []

    def copy_gbps(device, nbytes):  # a copy of nbytes, read and written, in bench_ms's 1 ms
        copies.append(nbytes)
        return 2 * nbytes / 1e6

    monkeypatch.setattr(bench_kernels, "copy_bandwidth", copy_gbps)
    shape = bench_kernels.Shape(3, 256, "per_token")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    inputs = bench_kernels.Inputs(shape, device)
    wan_kernels.set_backend("triton")
    try:
        rows = [bench_kernels.run_op(op, shape, inputs, op.reference, 1000.0) for op in bench_kernels.OPS]
    finally:
        wan_kernels.set_backend("auto")
    assert [row["check"] for row in rows] == ["ok"] * len(bench_kernels.OPS), rows
    assert all(row["ours_host_us"] == row["compile_host_us"] == 5.0 for row in rows), rows
    assert all(row["ours_ms"] == row["ours_ms_again"] == 1.0 for row in rows), rows
    # Each op against a copy moving its traffic (half read, half written) in as long as it took.
    assert copies == [bench_kernels.traffic_bytes(op, op.args(inputs), op.reference(*op.args(inputs))) // 2
                      for op in bench_kernels.OPS]
    assert [row["frac_copy_same_bytes"] for row in rows] == [1.0] * len(rows), rows
    # layernorm_modulate: bfloat16 [1, 3, 256] and two float32 per-token modulations read, float32 written.
    op = bench_kernels.OPS[0]
    args = op.args(inputs)
    assert bench_kernels.traffic_bytes(op, args, op.reference(*args)) == 3 * 256 * (2 + 4 + 4 + 4)


def test_shapes_are_chosen_by_size_in_the_order_given():
    assert bench_kernels.select_shapes("75600x5120, 32760x5120") == [bench_kernels.SHAPES[2],
                                                                      bench_kernels.SHAPES[0]]
    for sizes, named in (("75600x5121", "75600x5121"), ("", "none given"), ("32760x3072,1x1", "1x1")):
        with pytest.raises(ValueError, match=f"--shapes: {named} is not a benchmark shape; choose from "
                                             "32760x5120, 75600x3072, 75600x5120, 32760x3072"):
            bench_kernels.select_shapes(sizes)


@needs_triton
def test_sweep_of_chosen_ops_compares_with_the_compiled_reference(monkeypatch):
    monkeypatch.setattr(bench_kernels, "bench_ms", lambda fn: (fn(), 2.0)[1])
    monkeypatch.setattr(bench_kernels, "SWEEP_GEOMETRIES", [dict(chunk=128, warps=2)])
    from wan_kernels.triton.launch import row_config

    shape = bench_kernels.Shape(3, 384, "per_sample")  # three heads of 128
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        rows = bench_kernels.sweep_rows(shape, bench_kernels.Inputs(shape, device), 1000.0, float("inf"),
                                        ["qk_rmsnorm_rope"], {"qk_rmsnorm_rope": 3.0, "rel_l1": 1.0})
    finally:
        wan_kernels.set_backend("auto")
    default = row_config("qk_rmsnorm_rope", 384).label
    assert [row["geometry"] for row in rows] == [f"{default} (default)", "chunk 128, 1 token, 2 warps"]
    assert all(row["check"] == "ok" and row["x_compile"] == 1.5 for row in rows), rows


def test_only_ops_short_of_the_bar_are_swept():
    """Swept: under SWEEP_BELOW of copy, slower than the compiled reference, failed or not run;
    the furthest from copy bandwidth first."""
    shape, other = bench_kernels.SWEEP_SHAPES
    rows = [
        {"backend": "triton", "op": "layernorm_modulate", "shape": shape.label, "frac_copy": 0.95},
        {"backend": "cuda", "op": "qk_rmsnorm_rope", "shape": shape.label, "frac_copy": 0.99},
        {"backend": "triton", "op": "qk_rmsnorm_rope", "shape": shape.label, "frac_copy": 0.5},
        {"backend": "triton", "op": "rel_l1", "shape": other.label, "frac_copy": 0.99},
        {"backend": "triton", "op": "rel_l1[stride 4]", "shape": other.label, "frac_copy": 0.95},
        {"backend": "triton", "op": "gated_residual_layernorm_modulate", "shape": shape.label,
         "check": "ERROR"},
        {"backend": "triton", "op": "gated_residual", "shape": shape.label, "frac_copy": 0.98,
         "x_compile": 0.97},
        {"backend": "triton", "op": "residual_apply", "shape": shape.label, "frac_copy": 1.0,
         "x_compile": 1.0},
        {"backend": "triton", "op": "residual_capture", "shape": shape.label, "frac_copy": 1.0},
    ]
    # Furthest from copy bandwidth first: failed and not run (as SWEEP_OPS orders them), then 0.5, 0.98.
    assert bench_kernels.ops_to_sweep(rows, shape) == [
        "gated_residual_layernorm_modulate", "rel_l1", "rel_l1[stride 4]", "qk_rmsnorm_rope",
        "gated_residual"]
    assert bench_kernels.ops_to_sweep(rows, other) == [
        "layernorm_modulate", "gated_residual_layernorm_modulate", "qk_rmsnorm_rope", "gated_residual",
        "residual_apply", "residual_capture"]


@needs_triton
def test_sweep_stops_at_its_deadline():
    shape = bench_kernels.Shape(3, 256, "per_sample")
    try:
        rows = bench_kernels.sweep_rows(shape, bench_kernels.Inputs(shape, torch.device("meta")), 1000.0, 0.0)
    finally:
        wan_kernels.set_backend("auto")
    assert rows == []


def _compiled_for_sm90(script: str, *args: str) -> object:
    """What ``script`` prints as JSON on its last line, run in a process where Triton compiles for
    the GPU (without ``TRITON_INTERPRET``), as ``benchmarks.kernel_resources`` needs; skips where
    this Triton cannot compile for NVIDIA GPUs here."""
    pytest.importorskip("triton.backends.nvidia")
    import triton.runtime.jit

    if not hasattr(triton.runtime.jit, "native_specialize_impl"):
        pytest.skip("this Triton has no native_specialize_impl, which benchmarks.kernel_resources uses")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@needs_triton
def test_compiled_kernels_at_the_widest_real_shape(tmp_path):
    script = ("import json, sys; from pathlib import Path; from benchmarks import kernel_resources as k; "
              "from benchmarks.bench_kernels import Shape; "
              "print(json.dumps(k.kernel_rows(90, Path(sys.argv[1]), [Shape(32760, 5120, 'per_sample')])))")
    rows = _compiled_for_sm90(script, str(tmp_path))
    assert {row["op"] for row in rows} == {op.name for op in bench_kernels.OPS}
    for row in rows:
        assert row["spill_bytes"] == 0, row
        if row["kernel"] == "_finish_kernel":  # one program summing a few hundred KB of partials
            continue
        assert all(access.endswith("x16B") for access in row["loads"].split()), row
        if row["kernel"] != "_partial_sums_kernel":  # which stores one float per program
            assert all(access.endswith("x16B") for access in row["stores"].split()), row
        if row["op"] == "qk_rmsnorm_rope":
            assert row["layout_conversions"] == 0, row


@needs_triton
def test_untimed_sweep_geometries_compile_for_sm90(tmp_path):
    """The sweep's geometries not yet timed on a GPU (the pipelined chunk walks, for each row op,
    and the reduction geometries, for the strided ``rel_l1``), compiled for an H100 at 32,760 x 5120
    as on a GPU, so that one that fails does so here and not in a lent GPU's time. None spills; in a
    pipelined walk every load of every loop is an asynchronous copy (Triton pipelined them all);
    one launch leaves the finishing kernel out and holds as many programs an SM as the same
    geometry in two launches (its partials' tile is sized not to cost registers)."""
    from wan_kernels.triton.launch import RowConfig

    pipelined = [RowConfig(**g) for g in bench_kernels.SWEEP_GEOMETRIES if g.get("stages", 1) > 1]
    reductions = [c for g in bench_kernels.SWEEP_REDUCTION_GEOMETRIES
                  for c in (RowConfig(**g), replace(RowConfig(**g), one_launch=False))]
    cases = [(name, config) for name in ("layernorm_modulate", "gated_residual_layernorm_modulate",
                                         "qk_rmsnorm_rope", "rel_l1[stride 4]")
             for config in (*pipelined, *(replace(c, stages=1) for c in pipelined))]
    cases += [("rel_l1[stride 4]", config) for config in reductions]
    cases = list(dict.fromkeys(cases))
    script = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from benchmarks import kernel_resources
        from benchmarks.bench_kernels import OPS, Shape
        from wan_kernels.triton.launch import RowConfig, configured

        ops = {op.name: op for op in OPS}
        found = []
        for name, fields in json.loads(sys.argv[2]):
            op = ops[name]
            with configured(op.ours.__name__, RowConfig(**fields)):
                found.append(kernel_resources.kernel_rows(90, Path(sys.argv[1]),
                                                          [Shape(32760, 5120, "per_sample")], [op]))
        print(json.dumps(found))
    """)
    argument = json.dumps([(name, asdict(config)) for name, config in cases])
    compiled = dict(zip(cases, _compiled_for_sm90(script, str(tmp_path), argument), strict=True))
    for (name, config), rows in compiled.items():
        assert all(row["spill_bytes"] == 0 for row in rows), (config, rows)
        assert (rows[0]["async_copies"] > 0) == (config.stages > 1), (config, rows)
        if config.stages > 1 and not config.one_launch:
            # Every load of every chunk walk pipelined: each site a copy a stage, none left direct.
            unpipelined = compiled[(name, replace(config, stages=1))][0]
            assert rows[0]["direct_loads"] == 0, (config, rows)
            assert rows[0]["async_copies"] == config.stages * unpipelined["direct_loads"], (config, rows)
        if config.one_launch:
            assert [row["kernel"] for row in rows] == ["_partial_sums_kernel"], (config, rows)
            two_launches = compiled[(name, replace(config, one_launch=False))]
            assert [row["kernel"] for row in two_launches] == ["_partial_sums_kernel", "_finish_kernel"]
            assert rows[0]["programs_per_sm"] == two_launches[0]["programs_per_sm"], (config, two_launches)


@pytest.mark.parametrize("model_type", ["i2v", "ti2v"])
def test_dit_block_row_runs_one_block_against_the_reference(model_type):
    """The whole-block row of bench_kernels on the CPU: the block's inputs come from the model's
    own ``prepare`` (the row failed for every case when they were passed wrongly)."""
    in_dim = 36 if model_type == "i2v" else 48
    out_dim = 16 if model_type == "i2v" else 48
    config = DiTConfig(model_type=model_type, in_dim=in_dim, out_dim=out_dim, dim=64, ffn_dim=128,
                       num_heads=2, num_layers=1, text_dim=32)
    row = bench_kernels.dit_block_row(Case(config, (2, 4, 4)), torch.device("cpu"), "torch")
    assert row["op"] == "DiTBlock" and float(row["rel_l2"]) == 0.0 and row["ours_ms"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and GPU sleeps need a GPU")
def test_op_times_are_of_graph_replays_and_host_times_of_eager_calls():
    x = torch.randn(1 << 22, device="cuda")
    out = torch.empty_like(x)
    calls = []

    def double() -> None:
        calls.append(None)
        torch.mul(x, 2, out=out)

    out.zero_()
    assert bench_kernels.bench_ms(double) > 0
    # Called twice (on a side stream, then captured): do_bench's calls replay the graph, no Python.
    assert len(calls) == 2
    torch.testing.assert_close(out, x * 2, rtol=0, atol=0)
    assert bench_kernels.host_us(double) > 0
    assert len(calls) == 2 + 1 + bench_kernels.HOST_CALLS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_timing_leaves_no_graph_memory_reserved():
    x = torch.randn(1 << 24, device="cuda")
    torch.cuda.empty_cache()
    reserved = torch.cuda.memory_reserved()
    for _ in range(3):  # each a new graph, whose pool would hold another 64 MB output
        bench_kernels.bench_ms(lambda: x * 2)
    assert torch.cuda.memory_reserved() == reserved


def test_inductor_launch_configs_names_each_kernels_autotuned_configuration(monkeypatch):
    """Inductor's Triton kernels run through ``CachingAutotuner.run`` (not on a CPU, where Inductor
    writes C++): a kernel autotuned to one launcher is recorded, one still holding several is not,
    and ``run`` is itself again after the block."""
    from types import SimpleNamespace

    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    def kernel(name, *configs):
        return SimpleNamespace(fn=SimpleNamespace(__name__=name),
                               launchers=[SimpleNamespace(config=c) for c in configs])

    monkeypatch.setattr(CachingAutotuner, "run", lambda self, *args, **kwargs: "ran")
    with bench_kernels.inductor_launch_configs() as configs:
        assert CachingAutotuner.run(kernel("triton_red_0", "XBLOCK: 1, R0_BLOCK: 2048"), 7, stream=0) == "ran"
        CachingAutotuner.run(kernel("triton_poi_1", "XBLOCK: 512", "XBLOCK: 1024"), stream=0)
    assert configs == {"triton_red_0": "XBLOCK: 1, R0_BLOCK: 2048"}
    CachingAutotuner.run(kernel("triton_red_2", "XBLOCK: 8"), stream=0)
    assert "triton_red_2" not in configs


def test_inductor_code_is_the_source_of_the_call_that_compiles():
    from wan_kernels import reference

    compiled = torch.compile(reference.residual_apply)
    args = (torch.randn(1, 4, 64), torch.randn(1, 4, 64))
    first, again = bench_kernels.inductor_code(compiled, args), bench_kernels.inductor_code(compiled, args)
    assert len(first) == 1 and "def call(" in first[0]
    assert again == []


@needs_triton
def test_placement_probe_launches_the_op_kernel_into_any_place(monkeypatch):
    """``placement_probe``'s direct launch (the op's own) writes what the op computes into an
    output placed inside a larger buffer, and each probe gives a row per placement (stand-in
    timer, 1 KiB "MiB")."""
    from benchmarks import placement_probe

    shape = bench_kernels.Shape(5, 256, "per_sample")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    inputs = bench_kernels.Inputs(shape, device)
    buffer = torch.zeros(3 * 5 * 256 + 7, device=device)
    out = buffer[7:7 + 5 * 256].view(1, 5, 256)
    placement_probe.launch_into(inputs.residual, inputs.hidden, inputs.gate, out)
    torch.testing.assert_close(out, wan_kernels.reference.gated_residual(inputs.residual, inputs.hidden,
                                                                         inputs.gate), rtol=0, atol=0)
    assert not buffer[:7].any() and not buffer[7 + 5 * 256:].any()

    monkeypatch.setattr(placement_probe, "bench_ms", lambda fn: (fn(), 2.0)[1])
    monkeypatch.setattr(placement_probe, "MIB", 1024)
    wan_kernels.set_backend("triton")
    try:
        # A copy bandwidth at which the op's 10 bytes an element (float32 x, bfloat16 y, float32
        # out) in the stand-in 2 ms are exactly copy speed; a copy moves 8.
        copy_gbps = 5 * 256 * 10 / 1e9 / 2.0 * 1e3
        gaps = placement_probe.gap_rows(shape, device, copy_gbps)
        pads = placement_probe.pad_rows(shape, device, copy_gbps)
    finally:
        wan_kernels.set_backend("auto")
    assert [row["placement"] for row in gaps] == [f"out {g} MiB after x" for g in placement_probe.GAPS_MIB]
    assert all(row["frac_copy"] == 1.0 and row["copy_frac"] == 0.8 for row in gaps), gaps
    assert [(row["probe"], row["placement"]) for row in pads] == [
        (op, f"fresh inputs after {pad} MiB") for pad in placement_probe.PADS_MIB
        for op in ("gated_residual", "gated_residual_layernorm_modulate")]
    # The fused op writes a second float32 result: 14 bytes an element.
    assert [row["frac_copy"] for row in pads] == [1.0, 1.4] * len(placement_probe.PADS_MIB)
