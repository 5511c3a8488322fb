"""FSDP weight sharding (the official ``--dit_fsdp`` and ``--t5_fsdp``) with torch's
``fully_shard``: each rank keeps ``1 / world`` of every weight, and a block's weights are gathered
whole just before it runs and freed after it, so a model too big for one GPU fits across several.

Sharding moves no arithmetic: the gathered weights are the loaded ones. (The official sharding
also casts every weight to the compute dtype on the way, as ``convert_model_dtype`` does; the
caller loads the weights that way, see ``wan_runtime.pipelines.load_pipeline``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method


class Sharding:
    """FSDP units over every process, their shards on ``device`` (this process's; for CUDA the
    current device): one per block (``block``), as soon as it is loaded if need be, then one for
    the rest of the module (``root``). ``entry_points`` and ``block_entry_points``: methods of the
    module and of every block, besides ``forward``, that callers run directly, which then gather
    their unit's weights too."""

    def __init__(self, device: torch.device, entry_points: Sequence[str] = (),
                 block_entry_points: Sequence[str] = ()) -> None:
        if not dist.is_initialized():
            raise RuntimeError("FSDP sharding needs torch.distributed initialised (launch with torchrun)")
        if device.type == "cuda" and device.index not in (None, torch.cuda.current_device()):
            # FSDP places the shards on the current device, whatever device it is told.
            raise ValueError(f"sharding onto {device} needs it to be the current device "
                             "(torch.cuda.set_device)")
        self.mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        self.entry_points = entry_points
        self.block_entry_points = block_entry_points

    def block(self, block: nn.Module) -> None:
        """Shard ``block`` (its weights loaded; the rest of the module's need not be yet)."""
        fully_shard(block, mesh=self.mesh)
        for name in self.block_entry_points:
            register_fsdp_forward_method(block, name)

    def root(self, module: nn.Module) -> nn.Module:
        """Shard what of ``module`` no block holds, once every block is sharded; returns it."""
        fully_shard(module, mesh=self.mesh)
        for name in self.entry_points:
            register_fsdp_forward_method(module, name)
        return module


def shard_module(
    module: nn.Module,
    blocks: Iterable[nn.Module],
    device: torch.device,
    entry_points: Sequence[str] = (),
    block_entry_points: Sequence[str] = (),
) -> nn.Module:
    """Shard ``module``'s weights over every process, one FSDP unit per block of ``blocks`` and
    one for the rest, as ``Sharding`` does. Returns ``module``, sharded in place."""
    sharding = Sharding(device, entry_points, block_entry_points)
    for block in blocks:
        sharding.block(block)
    return sharding.root(module)
