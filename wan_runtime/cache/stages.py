"""What the cache manager needs from a DiT, and that interface for ``WanModel``.

A DiT forward is ``prepare`` -> ``run_blocks`` -> ``finish``; the manager runs these stages itself
so that it can stop after the first block or skip the blocks altogether. Another DiT (e.g. the
s2v model) plugs in by providing the same five members.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from wan_runtime.distributed.ulysses import SequenceShard
from wan_runtime.models import WanModel


class CachedModel(Protocol):
    """A DiT as the cache manager drives it."""

    num_blocks: int

    def prepare(self, *inputs: Any) -> tuple[torch.Tensor, Any]:
        """Tokens [B, L, C] and whatever the blocks and head need besides them."""

    def run_blocks(
        self, tokens: torch.Tensor, cond: Any, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """``blocks[start:stop]`` on the tokens."""

    def finish(self, tokens: torch.Tensor, cond: Any) -> torch.Tensor:
        """The head: the model's output."""

    def modulated_input(self, tokens: torch.Tensor, cond: Any) -> torch.Tensor:
        """The first block's modulated, normalised input (TeaCache's ``linear`` signal)."""

    def time_signal(self, t: float) -> torch.Tensor:
        """A signal of timestep value ``t`` alone (TeaCache's planned ``poly`` signal)."""

    def sequence_shard(self, cond: Any) -> SequenceShard | None:
        """The split of the tokens over ranks under sequence parallelism (the tokens are then this
        rank's slice), or None."""


class WanStages:
    """``CachedModel`` for ``WanModel``: a computed step is ``prepare`` -> ``run_blocks(0, 1)`` ->
    ``run_blocks(1)`` -> ``finish``, which is bitwise the model's forward."""

    def __init__(self, model: WanModel) -> None:
        self.model = model
        self.num_blocks = len(model.blocks)

    def prepare(self, *inputs: Any) -> tuple[torch.Tensor, Any]:
        return self.model.prepare(*inputs)

    def run_blocks(
        self, tokens: torch.Tensor, cond: Any, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        return self.model.run_blocks(tokens, cond, start, stop)

    def finish(self, tokens: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.model.finish(tokens, cond)

    def modulated_input(self, tokens: torch.Tensor, cond: Any) -> torch.Tensor:
        # The first block's own modulated norm, through the block (under FSDP its weights are
        # gathered only for calls into it).
        return self.model.blocks[0].modulated_norm(tokens, cond.time, cond.time_index)

    def sequence_shard(self, cond: Any) -> SequenceShard | None:
        return cond.shard

    def time_signal(self, t: float) -> torch.Tensor:
        # The noisy tokens' timestep: for ti2v with an image, the first-frame tokens sit at t=0
        # on every step and carry no change, so they are left out of the signal.
        return self.model.embed_timesteps(torch.tensor([t], dtype=torch.float64))


class S2VStages(WanStages):
    """``CachedModel`` for ``WanModelS2V``: its conditioning keeps the Wan DiT's under ``dit``."""

    def modulated_input(self, tokens: torch.Tensor, cond: Any) -> torch.Tensor:
        return super().modulated_input(tokens, cond.dit)

    def sequence_shard(self, cond: Any) -> SequenceShard | None:
        return cond.dit.shard
