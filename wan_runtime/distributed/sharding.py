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


def shard_module(
    module: nn.Module,
    blocks: Iterable[nn.Module],
    device: torch.device,
    entry_points: Sequence[str] = (),
    block_entry_points: Sequence[str] = (),
) -> nn.Module:
    """Shard ``module``'s weights over every process, one FSDP unit per block of ``blocks`` and
    one for the rest; the shards go to ``device`` (this process's; for CUDA the current device).
    ``entry_points`` and ``block_entry_points``: methods of the module and of every block, besides
    ``forward``, that callers run directly, which then gather their unit's weights too. Returns
    ``module``, sharded in place."""
    if not dist.is_initialized():
        raise RuntimeError("FSDP sharding needs torch.distributed initialised (launch with torchrun)")
    if device.type == "cuda" and device.index not in (None, torch.cuda.current_device()):
        # FSDP places the shards on the current device, whatever device it is told.
        raise ValueError(f"sharding onto {device} needs it to be the current device (torch.cuda.set_device)")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in blocks:
        fully_shard(block, mesh=mesh)
        for name in block_entry_points:
            register_fsdp_forward_method(block, name)
    fully_shard(module, mesh=mesh)
    for name in entry_points:
        register_fsdp_forward_method(module, name)
    return module
