"""``bench_dit`` on a tiny model: the row against the official forward, and the compiled columns."""

import torch

from benchmarks import bench_dit
from wan_runtime.models import DiTConfig

TINY = DiTConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=64, ffn_dim=128, num_heads=2, num_layers=2)


def test_row_with_compiled_blocks():
    row = bench_dit.run_case(bench_dit.Case(TINY, (2, 4, 6)), torch.device("cpu"), torch.float32, warmup=0,
                             repeat=1, compiled=True)
    assert (row["tokens"], row["t"]) == (12, "per-token")
    assert float(row["ours~off"]) < 1e-5 and float(row["compiled~ours"]) < 1e-5
    assert min(row["official_ms"], row["ours_ms"], row["compiled_ms"], row["x_eager"]) > 0
    assert row["first_call_s"] > 0
