"""The metric hook averages across ranks so every rank decides alike (2-process gloo, CPU)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wan_runtime.cache import reduce_metric


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metric = torch.tensor(0.1 if rank == 0 else 0.3)
        results[rank] = reduce_metric(metric).item()
    finally:
        dist.destroy_process_group()


def test_two_ranks_see_the_mean():
    port = _free_port()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(2, port, results), nprocs=2, join=True)
        assert results[0] == results[1] == torch.tensor(0.2).item()


def test_single_process_leaves_the_metric_alone():
    metric = torch.tensor(0.25)
    assert reduce_metric(metric) is metric
