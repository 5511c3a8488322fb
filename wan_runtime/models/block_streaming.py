"""DiT blocks kept in CPU memory and copied to the device for their forward alone.

A 14B expert holds 40 blocks of about 0.7 GB each in bfloat16: more than a 24 GB GPU. Streamed
blocks keep their weights in CPU memory, pinned and packed into a few buffers
(``wan_runtime.models.pinned_chunks``); just before a block runs they are copied to the
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

from wan_runtime.models.device_copies import module_tensors, swap_back, swap_in_copies
from wan_runtime.models.pinned_chunks import move_into_chunks


class BlockStreaming:
    """``blocks[index]`` for each of ``indices`` kept in CPU memory (moved into pinned buffers when
    ``device`` is a GPU), and copied to ``device`` inside ``on_device(index)``."""

    def __init__(self, blocks: Sequence[nn.Module], indices: Sequence[int], device: torch.device) -> None:
        self.device = device
        self.loaded: set[int] = set()
        self._stored = {i: module_tensors(blocks[i]) for i in indices}
        # Pinned pages copy to a GPU at full bus speed and without blocking the host. Elsewhere the
        # tensors stay as they are: those in their file's dtype read its mapped pages, not copies.
        if device.type == "cuda":
            move_into_chunks([tensor for tensors in self._stored.values() for tensor in tensors], pin=True)

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
        swapped = swap_in_copies(stored, self.device, non_blocking=True)
        self.loaded.add(index)
        try:
            yield
        finally:
            swap_back(swapped)
            self.loaded.discard(index)
