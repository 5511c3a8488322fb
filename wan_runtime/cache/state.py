"""The tensors a step cache keeps for one branch of one model, and where they live."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class BranchState:
    """Cached tensors of one branch: ``tea_residual`` (last block output minus the first block's
    input), ``fb_residual`` (minus the first block's output), ``fb_reference`` (the first block's
    output or residual at the last computed step, at every ``fb_downsample``-th token: all that
    FBCache's metric reads) and ``tea_signal`` (TeaCache's signal at the previous step)."""

    tea_residual: torch.Tensor | None = None
    fb_residual: torch.Tensor | None = None
    fb_reference: torch.Tensor | None = None
    tea_signal: torch.Tensor | None = None
    # (shape, dtype) of the hidden state each residual was captured against: a skip adds the
    # residual only to a hidden state of the same kind.
    tea_base: tuple[torch.Size, torch.dtype] | None = None
    fb_base: tuple[torch.Size, torch.dtype] | None = None

    def _tensors(self) -> list[tuple[str, torch.Tensor]]:
        pairs = ((f.name, getattr(self, f.name)) for f in fields(self))
        return [(name, value) for name, value in pairs if isinstance(value, torch.Tensor)]

    def to(self, device: torch.device) -> None:
        """Move every cached tensor to ``device`` (they follow their model when it is offloaded)."""
        for name, tensor in self._tensors():
            setattr(self, name, tensor.to(device))

    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return sum(t.numel() * t.element_size() for _, t in self._tensors())

    def clear(self) -> None:
        """Drop every cached tensor."""
        for f in fields(self):
            setattr(self, f.name, None)
