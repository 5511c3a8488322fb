"""DiT blocks kept in CPU memory and copied to the device for their forward alone.

A 14B expert holds 40 blocks of about 0.7 GB each in bfloat16: more than a 24 GB GPU. Streamed
blocks keep their weights in (pinned) CPU memory; just before a block runs they are copied to the
device, and once its work is queued the device copies are dropped, so the device holds the rest
of the model and one streamed block at a time. The numbers are the same: the same weights meet the
same kernels.

The copies are queued on the compute stream, so they need no synchronisation: a block's copy
finishes before its kernels start, and the memory of a dropped copy returns to the caching
allocator only for work queued after the block's. Reading 0.7 GB from pinned memory takes tens of
milliseconds over PCIe 4, against the hundreds a block's forward takes at the official video
sizes. Which blocks are on the device (``loaded``) is kept apart from the tensors' devices so
that the logic is observable, and testable, on a CPU-only run where both places are the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

_CPU = torch.device("cpu")


class BlockStreaming:
    """``blocks[index]`` for each of ``indices`` kept in CPU memory (pinned when ``device`` is a
    GPU), and copied to ``device`` inside ``on_device(index)``."""

    def __init__(self, blocks: Sequence[nn.Module], indices: Sequence[int], device: torch.device) -> None:
        self.device = device
        self.loaded: set[int] = set()
        self._stored: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for index in indices:
            tensors = [*blocks[index].parameters(), *blocks[index].buffers()]
            self._stored[index] = [(tensor, _host_copy(tensor, device)) for tensor in tensors]
            for tensor, host in self._stored[index]:
                tensor.data = host

    @property
    def indices(self) -> list[int]:
        """The streamed blocks' indices."""
        return sorted(self._stored)

    @contextmanager
    def on_device(self, index: int) -> Iterator[None]:
        """Block ``index``'s weights on the device for the body (nothing to do for a block that
        is not streamed)."""
        stored = self._stored.get(index)
        if stored is None:
            yield
            return
        for tensor, host in stored:
            tensor.data = host.to(self.device, non_blocking=True)
        self.loaded.add(index)
        try:
            yield
        finally:
            for tensor, host in stored:
                tensor.data = host
            self.loaded.discard(index)


def _host_copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    host = tensor.detach().to(_CPU)
    # Pinned pages copy to a GPU at full bus speed and without blocking the host.
    return host.pin_memory() if device.type == "cuda" else host
