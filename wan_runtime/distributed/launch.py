"""The processes of one ``torchrun`` launch: which one this is, the process group's start and
end, and what every process must agree on before it computes (the seed, the free memory)."""

from __future__ import annotations

import gc
import os
import threading
import warnings
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from wan_runtime.errors import InputError

T = TypeVar("T")

WAIT_NOTE_S = 60.0
# Where the processes of a launch meet (torch.distributed's env:// rendezvous).
RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Launch:
    """This process's ``rank`` of ``world`` processes and its ``local_rank`` on its machine (the
    GPU it takes); one process (0, 1, 0) when not started by ``torchrun``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Launch:
        """The launch ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
        (``InputError`` for values it would never set, or a launch of several processes without
        the rendezvous address it sets too)."""
        values = {}
        for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
            raw = os.environ.get(name, str(default))
            try:
                values[name] = int(raw)
            except ValueError:
                raise InputError(f"environment variable {name}={raw!r} is not an integer; start several "
                                 "processes with torchrun, which sets it, or unset it") from None
        launch = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
        if launch.world < 1 or not 0 <= launch.rank < launch.world or launch.local_rank < 0:
            raise InputError(f"RANK={launch.rank}, WORLD_SIZE={launch.world}, LOCAL_RANK={launch.local_rank} "
                             "describe no process of a launch; start several processes with torchrun, "
                             "or unset them")
        unset = [name for name in RENDEZVOUS if launch.distributed and not os.environ.get(name)]
        if unset:
            raise InputError(f"WORLD_SIZE={launch.world} describes a launch of several processes, but "
                             f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set; start "
                             "them with torchrun, which sets both, or unset WORLD_SIZE")
        return launch

    @property
    def distributed(self) -> bool:
        """Whether this launch has several processes."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process reports and writes the results (rank 0)."""
        return self.rank == 0

    @property
    def on_main_machine(self) -> bool:
        """Whether this process runs on rank 0's machine (torchrun numbers a machine's processes
        one after another, so there rank and local rank are equal), whose files rank 0 uses."""
        return self.rank == self.local_rank

    @property
    def speaks_for_machine(self) -> bool:
        """Whether this process tells the problems every process of its machine finds in the
        command line: rank 0, and the first process of each other machine, whose files may differ
        from rank 0's machine's."""
        return self.local_rank == 0

    def start(self, device: torch.device, note_after_s: float = WAIT_NOTE_S) -> None:
        """Join the launch's process group (NCCL for CUDA ``device``, the GPU this process then
        uses; gloo for the CPU), warning if the other processes have not all come after
        ``note_after_s`` seconds. Nothing to do for one process."""
        if not self.distributed or dist.is_initialized():
            return
        # A process started alone, or a launch of fewer processes than it says, waits silently.
        note = threading.Timer(note_after_s, warnings.warn, args=(
            f"rank {self.rank} has waited {note_after_s:g} s for the other processes of the launch "
            f"({self.world} in all) at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}; "
            "start them all with torchrun (--nproc_per_node, and --nnodes with several machines)",))
        note.daemon = True
        note.start()
        try:
            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
        finally:
            note.cancel()

    def stop(self) -> None:
        """Leave the process group once every process has finished."""
        if dist.is_initialized():
            dist.barrier()
            leave_process_group()

    def abandon(self) -> None:
        """Leave the process group after a failure, without waiting for the other processes
        (torchrun stops them when one fails)."""
        if dist.is_initialized():
            leave_process_group()


def leave_process_group() -> None:
    """Destroy the process group and free the groups' objects now, while the interpreter is whole
    (what still holds a model sharded over them keeps them, as it should: after a failure, the
    traceback's frames, which the command line lets go of once it has told the error)."""
    dist.destroy_process_group()
    # DTensor's sharding-propagation caches hold FSDP's device meshes, and so their groups, until
    # the interpreter exits. A gloo group's worker thread still letting go of a finished
    # collective's tensors then takes the GIL during finalization, and the process aborts
    # ("terminate called without an active exception"; pytorch/pytorch PR 179291). Freed here,
    # each group first joins its threads. The caches are this thread's, where the models ran.
    try:
        from torch.distributed.tensor.debug import _clear_sharding_prop_cache
    except ImportError:  # an older torch, which has no way to clear them: its groups live to the exit
        pass
    else:
        _clear_sharding_prop_cache()
    gc.collect()


def from_rank0(value: T) -> T:
    """Rank 0's ``value`` on every rank of the process group (``value`` itself without one), for
    what every rank must agree on but could find otherwise (a random draw, a file's existence)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_every_rank(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank of the process group (``[value]``
    without one), for what every rank must decide alike from what each finds for itself (the
    free memory of its GPU and machine)."""
    if not dist.is_initialized():
        return [value]
    values: list[T] = [value] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def shared_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every rank: every rank must draw the same noise, and a random seed
    drawn by each would differ."""
    return from_rank0(seed)
