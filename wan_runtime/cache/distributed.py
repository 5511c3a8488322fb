"""The one place a gate metric crosses ranks: every rank must take the same skip decision.

Under sequence parallelism each rank measures its own shard; a rank that skipped while another
computed would wait forever in the computing rank's collectives. Averaging the scalar metric
before the host reads it makes the decision identical everywhere.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def reduce_metric(metric: torch.Tensor) -> torch.Tensor:
    """``metric`` (0-d) averaged over the default process group when it has more than one rank;
    unchanged otherwise. No host synchronisation beyond the collective itself."""
    if not (dist.is_available() and dist.is_initialized()):
        return metric
    world = dist.get_world_size()
    if world == 1:
        return metric
    total = metric.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world
