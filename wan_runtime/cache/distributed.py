"""The one place a gate metric crosses ranks: every rank of a run split over a process group
must take the same skip decision.

A rank that skipped while another computed would wait forever in the computing rank's
collectives. Under sequence parallelism each rank holds a slice of the tokens, and the metric is
that of the whole sequence, as one process measures it: the ranks' numerators and denominators
are summed before the ratio is taken. Otherwise every rank measured the same tensors, and the
all-reduced mean makes their values agree to the bit.
"""

from __future__ import annotations

from collections.abc import Callable

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
    measure: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    current: torch.Tensor,
    reference: torch.Tensor,
    shared: bool,
    shard: SequenceShard | None = None,
) -> torch.Tensor:
    """``measure(current, reference)`` (``wan_kernels.rel_l1`` or ``rel_l2``, 0-d); when the run
    is ``shared`` by the ranks of a process group, the same on every rank. With ``shard`` the
    tensors are this rank's tokens of a split sequence (padding left out), and the result is the
    whole sequence's."""
    local = measure(current, reference)
    if not shared:  # a run of its own, whatever process group this process may be in
        return local
    if shard is None:
        return reduce_metric(local)
    squared = measure is wan_kernels.rel_l2
    # The denominator this rank's ratio was taken over; an empty slice (a rank holding padding
    # only) adds nothing, though its own ratio is 0/0.
    denominator = reference.float().square().sum() if squared else reference.abs().sum(dtype=torch.float32)
    numerator = torch.where(denominator > 0, (local.square() if squared else local) * denominator, 0.0)
    sums = torch.stack([numerator, denominator])
    dist.all_reduce(sums, group=shard.parallel.group)
    ratio = sums[0] / sums[1]
    return ratio.sqrt() if squared else ratio
