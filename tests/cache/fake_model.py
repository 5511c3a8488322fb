"""A ``CachedModel`` whose blocks are cheap arithmetic, recording every block range it runs."""

from __future__ import annotations

import torch


class FakeDiT:
    """Tokens are the input itself; block ``i`` maps ``x`` to ``1.5 x + 1`` (so a residual
    depends on the input and a reused one is visibly not a compute)."""

    def __init__(self, num_blocks: int = 4) -> None:
        self.num_blocks = num_blocks
        self.calls: list[tuple[int, int]] = []

    def prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None

    def run_blocks(self, tokens, cond, start=0, stop=None):
        stop = self.num_blocks if stop is None else stop
        self.calls.append((start, stop))
        for _ in range(start, stop):
            tokens = tokens * 1.5 + 1
        return tokens

    def finish(self, tokens, cond):
        return tokens

    def modulated_input(self, tokens, cond):
        return tokens

    def sequence_shard(self, cond):
        return None

    def time_signal(self, t: float) -> torch.Tensor:
        """``[[t]]``: the relative L1 change between two steps is ``|t1 - t0| / t0``."""
        return torch.tensor([[t]])

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """The uncached output."""
        for _ in range(self.num_blocks):
            x = x * 1.5 + 1
        return x


def tokens(value: float, length: int = 4, dtype=torch.float32) -> torch.Tensor:
    """[1, length, 2] filled with ``value``."""
    return torch.full((1, length, 2), value, dtype=dtype)
