"""``bench_graphs`` on a tiny model with ``RerunBackend``'s graphs: the row, exact; the script itself
stops without a GPU, saying why."""

import subprocess
import sys

import pytest
import torch

from benchmarks import bench_graphs
from benchmarks.bench_dit import Case
from wan_runtime.models import DiTConfig
from wan_runtime.models.cuda_graphs import RerunBackend, StageGraphs

TINY = DiTConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=64, ffn_dim=128, num_heads=2, num_layers=3)


def test_rows_replay_the_eager_numbers_count_their_own_captures_and_release_their_graphs():
    for grid, tokens in (((2, 4, 6), 12), ((2, 4, 4), 8)):
        graphs = StageGraphs(RerunBackend())  # each of the script's cases has its own
        row = bench_graphs.run_case(Case(TINY, grid), torch.device("cpu"), torch.float32, warmup=0, repeat=1,
                                    graphs=graphs)
        assert (row["layers"], row["tokens"], row["captures"], row["equal"]) == (3, tokens, 1, True)
        assert min(row["eager_ms"], row["graphs_ms"], row["x_eager"]) > 0
        assert "extra_GB" not in row and graphs.held_bytes == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_script_says_it_needs_one():
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_graphs"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "CUDA graphs need a GPU; run it with --gpu" in done.stderr
