"""The one place a gate metric crosses ranks: every rank of a run split over a process group
must take the same skip decision.

A rank that skipped while another computed would wait forever in the computing rank's
collectives. Under sequence parallelism each rank holds a slice of the tokens, and the metric is
that of the whole sequence, as one process measures it: the ranks' numerators and denominators
are summed before the ratio is taken. Otherwise every rank measured the same tensors, and the
all-reduced mean makes their values agree to the bit.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import wan_kernels
from wan_runtime.distributed.ulysses import SequenceShard


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


def agreed_metric(
    squared: bool,
    current: torch.Tensor,
    reference: torch.Tensor,
    shared: bool,
    shard: SequenceShard | None = None,
) -> torch.Tensor:
    """The relative change of ``current`` from ``reference`` (0-d): ``wan_kernels.rel_l2`` if
    ``squared``, else ``rel_l1``. The same on every rank when the run is ``shared`` by the ranks of
    a process group or split over them (``shard``: the tensors are then this rank's tokens of the
    sequence, padding left out, and the result is the whole sequence's)."""
    measure = wan_kernels.rel_l2 if squared else wan_kernels.rel_l1
    local = measure(current, reference)
    if shard is None:
        # A run of its own takes no collective, whatever process group this process may be in.
        return reduce_metric(local) if shared else local
    denominator = reference.float().square().sum() if squared else reference.abs().sum(dtype=torch.float32)
    # The fused ratio times its denominator is this rank's numerator, but for a reference of
    # zeros (or none: a rank of padding only), whose ratio is not finite.
    numerator = torch.where(
        denominator > 0,
        (local.square() if squared else local) * denominator,
        current.float().square().sum() if squared else current.abs().sum(dtype=torch.float32),
    )
    sums = torch.stack([numerator, denominator])
    group = shard.parallel.group_for(sums)
    if group is not None:
        dist.all_reduce(sums, group=group)
    ratio = sums[0] / sums[1]
    return ratio.sqrt() if squared else ratio
