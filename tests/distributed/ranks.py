"""Running a test function in several CPU processes joined by a gloo process group, as torchrun
would start them (its environment variables included)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wan_runtime.distributed.launch import leave_process_group


def free_port() -> int:
    """A TCP port nothing listens on now, for a rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    fn: Callable[..., None], world: int, *args: object, timeout_s: float = 300, backend: str = "gloo"
) -> None:
    """``fn(rank, *args)`` in ``world`` processes (``fn`` at module level, so that a spawned process
    can import it); a failure in any of them fails the caller with its traceback, and so does a
    collective some rank never joins, after ``timeout_s``. ``backend="nccl"``: rank r on cuda:r."""
    context = mp.spawn(_rank_main, args=(fn, world, free_port(), backend, args), nprocs=world, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"{fn.__name__} did not finish in {timeout_s} s in {world} processes "
                               "(a collective that not every rank joined?)")


def _rank_main(rank: int, fn: Callable[..., None], world: int, port: int, backend: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        fn(rank, *args)
    finally:
        if dist.is_initialized():  # the command line's main leaves the group itself
            leave_process_group()
