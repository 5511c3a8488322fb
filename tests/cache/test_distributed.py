"""The gate metrics agree across ranks (CPU processes, gloo): a metric all ranks measured alike
is averaged; under sequence parallelism the metric is the whole sequence's."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.distributed.ranks import run_ranks
from wan_runtime.cache import reduce_metric
from wan_runtime.cache.distributed import agreed_metric
from wan_runtime.distributed.ulysses import SequenceParallel


def _mean(rank: int) -> None:
    assert reduce_metric(torch.tensor(0.1 if rank == 0 else 0.3)).item() == torch.tensor(0.2).item()


def test_two_ranks_see_the_mean():
    run_ranks(_mean, 2)


def test_single_process_leaves_the_metric_alone():
    metric = torch.tensor(0.25)
    assert reduce_metric(metric) is metric


def _own_run(rank: int) -> None:
    current, reference = torch.full((1, 4, 2), 1.0 + rank), torch.ones(1, 4, 2)
    assert agreed_metric(False, current, reference, shared=False).item() == rank


def test_a_run_of_its_own_keeps_its_metric_in_a_process_group():
    """A pipeline not split over the group (say, one rank's own preview) takes no collective:
    the other ranks never join it, so it would wait forever."""
    run_ranks(_own_run, 2)


def _whole_sequence(rank: int, length: int) -> None:
    generator = torch.Generator().manual_seed(0)
    current, reference = (torch.randn(1, length, 8, generator=generator) for _ in range(2))
    reference[:, :2] = 0  # with 3 ranks, all of rank 0's slice: a reference of zeros, a non-finite ratio
    shard = SequenceParallel.over().shard(length)
    mine = [shard.split(x) + 5.0 * (torch.arange(shard.local) + rank * shard.local >= length)[:, None]
            for x in (current, reference)]  # padded rows hold values, as after a block, never measured
    for squared, measure in ((False, wan_kernels.rel_l1), (True, wan_kernels.rel_l2)):
        for stride in (1, 3):
            got = agreed_metric(squared, *(shard.real_rows(x, stride) for x in mine), True, shard)
            want = measure(current[:, ::stride], reference[:, ::stride])
            assert torch.allclose(got, want, rtol=1e-6), (squared, stride, rank)


@pytest.mark.parametrize("world, length", [(2, 9), (3, 4)], ids=["one padded row", "a rank of padding only"])
def test_split_sequence_measures_the_whole_sequence(world, length):
    """Not the mean of the ranks' own ratios: their sums, as one process measures the sequence."""
    run_ranks(_whole_sequence, world, length)
