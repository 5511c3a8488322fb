"""Splitting the frames of a convolutional network into bands of rows over processes, each
process working on its band, for networks whose every process holds the same input.

Convolutions are local: an output row of a 3x3 convolution reads one input row above and one
below it. A band worked alone, with its neighbours' edge rows where the whole frame's
convolution reads past the band (``Bands.halo``; zeros past the frame's edges, as the
convolution's padding), gives that band's rows of the whole frame's output. A layer that reads
the whole frame (an attention over its pixels) gathers it first (``Bands.gather``), and keeps its
band of the result (``Bands.own``).

Bands are counted in rows of a base grid (``RowSplit.bands``; for a VAE, latent rows): the first
``rows % world`` processes take one row more. A tensor with ``s`` rows per base row (a VAE level
at ``s`` times the latent resolution) splits alike, so upsampling and stride-2 downsampling keep
every band whole. The layers find the bands of the computation running in this thread with
``active_bands``, set by ``Bands.active``.

A planned split (``RowSplit.planned``, no process group) exchanges nothing: a halo is zeros and
a gather uninitialised, allocated as the exchanges allocate them, so that a process's memory can
be counted on the meta device (``wan_runtime.pipelines.activation_memory``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F

from wan_runtime.distributed.process_split import ProcessSplit

# torch 2.13 deprecates all_gather_into_tensor for all_gather_single, which torch 2.11 lacks.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class RowSplit(ProcessSplit):
    """The process group frames are split over, and this process's place in it (no group:
    ``planned``)."""

    what: ClassVar[str] = "frames' rows"

    @classmethod
    def planned(cls, world: int, rank: int | None = None) -> RowSplit:
        """Rank ``rank``'s place in a split over ``world`` processes that exchanges nothing (see
        the module's docstring): for counting memory, not for computing. None (the default): in
        each frame, the rank whose band holds the most memory (``bands``)."""
        return super().planned(world, rank)

    def bands(self, rows: int) -> Bands | None:
        """The bands of a frame of ``rows`` base rows; None when there are fewer rows than
        processes, which then each work on the whole frame."""
        if rows < self.world:
            return None
        base, extra = divmod(rows, self.world)
        rank = self.rank
        if rank is None:
            # Rank 0 alone with a row more holds the most: its extra row outweighs rank 1's second
            # neighbour's (one row at each level). Else rank 1: as many rows as any, two neighbours.
            rank = 0 if self.world == 2 or extra == 1 else 1
        return Bands(self, tuple(base + (r < extra) for r in range(self.world)), rank)


_ACTIVE: ContextVar[Bands | None] = ContextVar("active_bands", default=None)


def active_bands() -> Bands | None:
    """The bands the computation running in this thread works on (``Bands.active``), if any."""
    return _ACTIVE.get()


@dataclass(frozen=True)
class Bands:
    """A frame's rows split over ``split``'s processes: ``sizes[r]`` base rows for rank ``r``;
    this process is ``rank``."""

    split: RowSplit
    sizes: tuple[int, ...]
    rank: int

    @property
    def start(self) -> int:
        """This process's first base row."""
        return sum(self.sizes[: self.rank])

    @contextmanager
    def active(self) -> Iterator[Bands]:
        """The layers run inside work on these bands (``active_bands``)."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def own(self, x: torch.Tensor) -> torch.Tensor:
        """This process's band of ``x``, a whole frame (rows: dim -2)."""
        scale = self._scale(x.shape[-2], sum(self.sizes))
        return x[..., self.start * scale : (self.start + self.sizes[self.rank]) * scale, :]

    def halo(self, x: torch.Tensor, above: int, below: int) -> torch.Tensor:
        """This process's band ``x`` with ``above`` rows of the band above before it and
        ``below`` rows of the band below after it (zeros at the frame's edges)."""
        split = self.split
        self._scale(x.shape[-2], self.sizes[self.rank])
        top = x.new_zeros(*x.shape[:-2], above, x.shape[-1])
        bottom = x.new_zeros(*x.shape[:-2], below, x.shape[-1])
        rank, rows = self.rank, x.shape[-2]
        # The band above reads our first ``below`` rows, the band below our last ``above`` (copied
        # to be sent, in a planned split too, so that both count the same memory).
        neighbours = []
        if rank > 0:
            neighbours.append((rank - 1, top, x[..., :below, :].contiguous()))
        if rank < split.world - 1:
            neighbours.append((rank + 1, bottom, x[..., rows - above :, :].contiguous()))
        group = split.group_for(x)
        if group is not None:
            ops = []
            for neighbour, received, sent in neighbours:
                peer = dist.get_global_rank(group, neighbour)
                ops += [dist.P2POp(dist.irecv, received, peer, group)] if received.numel() else []
                ops += [dist.P2POp(dist.isend, sent, peer, group)] if sent.numel() else []
            for request in dist.batch_isend_irecv(ops) if ops else ():
                request.wait()
        return torch.cat([top, x, bottom], dim=-2)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The whole frame from every process's band ``x`` (rows: dim -2)."""
        split = self.split
        scale = self._scale(x.shape[-2], self.sizes[self.rank])
        most = max(self.sizes) * scale
        # The collective takes bands of one size: ours padded to the largest.
        padded = (x if x.shape[-2] == most else F.pad(x, (0, 0, 0, most - x.shape[-2]))).contiguous()
        gathered = padded.new_empty(split.world * padded.shape[0], *padded.shape[1:])
        group = split.group_for(x)
        if group is not None:
            _all_gather(gathered, padded, group)
        pieces = gathered.unflatten(0, (split.world, padded.shape[0])).unbind(0)
        bands = [piece[..., : n * scale, :] for piece, n in zip(pieces, self.sizes, strict=True)]
        return torch.cat(bands, dim=-2)

    def _scale(self, rows: int, base_rows: int) -> int:
        """Rows per base row of a tensor with ``rows`` rows where ``base_rows`` are expected."""
        if rows % base_rows:
            raise ValueError(f"{rows} rows are not a whole number of rows for each of {base_rows} base rows")
        return rows // base_rows
