"""A computation split over the processes of a group, and this process's place in it: what the
sequence split (``ulysses``) and the frames' row split (``row_split``) share.

A split with no group is planned: it exchanges nothing, its exchanges giving tensors of their
results' shapes, made as the collectives make them, so that a process's memory can be counted on
the meta device (``wan_runtime.pipelines.activation_memory``); it refuses real tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.distributed as dist

if TYPE_CHECKING:  # typing has Self from Python 3.11; the annotations are strings
    from typing import Self


@dataclass(frozen=True)
class ProcessSplit:
    """The process group a computation is split over (None: planned), its size and this
    process's rank in it."""

    group: dist.ProcessGroup | None
    world: int
    rank: int | None

    what: ClassVar[str] = "a computation"
    """What is split, as messages name it."""

    @classmethod
    def over(cls, group: dist.ProcessGroup | None = None) -> Self:
        """The split over ``group`` (default: every process), which must be initialised."""
        if not dist.is_initialized():
            raise RuntimeError(f"splitting {cls.what} over processes needs torch.distributed initialised "
                               "(launch with torchrun)")
        group = group or dist.group.WORLD
        return cls(group, dist.get_world_size(group), dist.get_rank(group))

    @classmethod
    def planned(cls, world: int, rank: int | None = 0) -> Self:
        """Rank ``rank``'s place in a split over ``world`` processes that exchanges nothing (see
        the module's docstring): for counting memory, not for computing."""
        if rank is not None and not 0 <= rank < world:
            raise ValueError(f"a split over {world} processes has no rank {rank}")
        return cls(None, world, rank)

    def group_for(self, tensor: torch.Tensor) -> dist.ProcessGroup | None:
        """The group to exchange ``tensor`` over; None for a planned split's meta tensors, which
        exchange nothing. A planned split refuses real tensors: it computes nothing."""
        if self.group is None and not tensor.is_meta:
            name = type(self).__name__
            raise RuntimeError(f"a planned split of {self.what} ({name}.planned) counts memory on the meta "
                               f"device and exchanges nothing; split a computation with {name}.over()")
        return self.group
