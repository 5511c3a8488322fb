"""``bench_vae_split`` on narrow VAEs over two CPU processes: both ways timed, the split result
within float32 rounding of the whole one, the split's estimate below one process's."""

import torch

from benchmarks import bench_vae, bench_vae_split
from tests.distributed.ranks import run_ranks
from wan_runtime.distributed.row_split import RowSplit

CASES = [bench_vae.Case("decode", "2.2", (8, 12), 128, 64, 5),
         bench_vae.Case("encode", "2.1", (8,), 128, 64, 5)]


def _rows(rank: int) -> None:
    torch.set_num_threads(1)
    with torch.inference_mode():
        rows = [bench_vae_split.run_case(case, torch.device("cpu"), torch.float32, 1) for case in CASES]
    for row, case in zip(rows, CASES, strict=True):
        assert (row["op"], row["processes"]) == (case.op, 2)
        assert row["alone_ms"] > 0 and row["split_ms"] > 0 and row["speedup"] > 0
        assert row["rel_l2"] < 1e-5 and "estimate_GiB" in row and "peak_split_GiB" not in row


def test_each_way_is_timed_and_the_split_matches():
    run_ranks(_rows, 2)


def test_the_split_estimates_less_than_one_process():
    for case in CASES:
        split = bench_vae.estimated_peak(case, torch.float32, RowSplit.planned(2))
        assert 0 < split < bench_vae.estimated_peak(case, torch.float32)

