"""``bench_streaming`` on a tiny model: the row, exact, on the CPU (where there is no memory column)."""

import torch

from benchmarks import bench_streaming
from benchmarks.bench_dit import Case
from wan_runtime.models import DiTConfig

TINY = DiTConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=64, ffn_dim=128, num_heads=2, num_layers=3)


def test_row_streams_all_but_the_first_block_and_is_exact():
    row = bench_streaming.run_case(Case(TINY, (2, 4, 6)), torch.device("cpu"), torch.float32, warmup=0,
                                   repeat=1)
    assert (row["layers"], row["streamed"], row["tokens"], row["equal"]) == (3, 2, 12, True)
    assert min(row["resident_ms"], row["streamed_ms"], row["x_resident"]) > 0
    assert "saved_GB" not in row
