"""Ulysses sequence parallelism (the official ``--ulysses_size``; DeepSpeed-Ulysses).

Each rank of a process group holds a contiguous slice of a sequence's tokens for everything a
token computes alone (norms, projections, feed-forward, cross-attention). Self-attention needs
every token, so around it one all-to-all trades the token slices for head slices: each rank then
attends over the whole sequence with ``num_heads / world`` of the heads, and a second all-to-all
trades them back. A sequence whose length does not divide by the world size is zero-padded at its
end; the padded keys are dropped before attention, so no real token sees them, and the padded
rows are dropped when the slices are gathered.

The exchanges are functional collectives, which ``torch.compile`` traces without a graph break.
A split with no process group (``SequenceParallel.planned``) exchanges nothing: each exchange
gives uninitialised tensors of its results' shapes, made as the collectives make them, so that a
process's memory can be counted on the meta device (``wan_runtime.pipelines.activation_memory``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F

from wan_runtime.distributed.process_split import ProcessSplit

# torch 2.12 renamed all_gather_tensor (kept, deprecated, in later versions) to all_gather_single.
_all_gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor


@dataclass(frozen=True)
class SequenceParallel(ProcessSplit):
    """The process group a sequence is split over, and this process's place in it (no group:
    ``planned``)."""

    rank: int
    what: ClassVar[str] = "a sequence"

    def shard(self, length: int) -> SequenceShard:
        """The slices of a sequence of ``length`` tokens."""
        return SequenceShard(self, length)


@dataclass(frozen=True)
class SequenceShard:
    """One sequence of ``length`` tokens, padded to ``padded``, split in slices of ``local``."""

    parallel: SequenceParallel
    length: int

    @property
    def local(self) -> int:
        """Tokens a rank holds (the last rank's slice may end in padding)."""
        return -(-self.length // self.parallel.world)

    @property
    def padded(self) -> int:
        """The sequence's length with its padding: every rank's slice of ``local`` tokens."""
        return self.local * self.parallel.world

    def split(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's slice of ``x`` along ``dim`` (of size ``length``), zero-padded at the end."""
        if x.size(dim) != self.length:
            raise ValueError(f"expected {self.length} tokens along dim {dim}, got {x.size(dim)}")
        dim %= x.dim()
        x = F.pad(x, (0, 0) * (x.dim() - 1 - dim) + (0, self.padded - self.length))
        return x.narrow(dim, self.parallel.rank * self.local, self.local).contiguous()

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's slice ``x`` [B, local, ...] joined in order: [B, length, ...]."""
        p = self.parallel
        group = p.group_for(x)
        if group is not None:
            return _all_gather(x.contiguous(), 1, group)[:, : self.length]
        # As the functional all-gather along dim 1 does: gathered along dim 0, then rearranged (a
        # view for one sample).
        gathered = x.new_empty((p.world * x.size(0), *x.shape[1:]))
        if x.size(0) > 1:
            gathered = torch.cat(gathered.chunk(p.world), dim=1)
        return gathered.view(x.size(0), -1, *x.shape[2:])[:, : self.length]

    def to_heads(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[B, local, H, D] tensors of this rank's tokens -> [B, padded, H / world, D] of every
        token for this rank's heads (rank r takes heads r * H / world on), in one exchange."""
        p = self.parallel
        b, local, heads, d = xs[0].shape
        send = torch.stack(xs).view(len(xs), b, local, p.world, heads // p.world, d)
        # Chunk r of the first dimension goes to rank r: its head group, for our tokens.
        send = send.permute(3, 0, 1, 2, 4, 5).contiguous()
        received = self._exchange(send)
        # Chunk r came from rank r: our head group, for its tokens.
        whole = received.permute(1, 2, 0, 3, 4, 5).reshape(len(xs), b, p.world * local, heads // p.world, d)
        return tuple(whole.unbind(0))

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of ``to_heads`` for one tensor: [B, padded, H / world, D] -> [B, local, H, D]."""
        p = self.parallel
        b, _, heads, d = x.shape
        send = x.reshape(b, p.world, self.local, heads, d).transpose(0, 1).contiguous()
        received = self._exchange(send)
        return received.permute(1, 2, 0, 3, 4).reshape(b, self.local, p.world * heads, d)

    def _exchange(self, send: torch.Tensor) -> torch.Tensor:
        """All-to-all of equal chunks along dim 0: chunk r goes to rank r, and chunk r of the
        result came from rank r."""
        group = self.parallel.group_for(send)
        return torch.empty_like(send) if group is None else funcol.all_to_all_single(send, None, None, group)

    def real_rows(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """Of this rank's slice ``x`` [..., local, C], the real tokens (no padding) whose index in
        the whole sequence is a multiple of ``stride``: a rank's share of ``whole[..., ::stride, :]``."""
        start = self.parallel.rank * self.local
        stop = max(0, min(self.local, self.length - start))
        return x[..., -start % stride : stop : stride, :]

    def real_keys(self, x: torch.Tensor) -> torch.Tensor:
        """[B, padded, ...] -> its first ``length`` tokens: the padding never becomes a key."""
        return x[:, : self.length]
