"""Tensors moved into a few CPU buffers whose sizes are powers of two, pinned for a GPU.

PyTorch's pinned-memory allocator rounds every request up to a power of two so that freed blocks
can be reused: pinned one tensor at a time, a 14B DiT block's weights take 1.5 times their bytes
(each 135 MiB feed-forward weight gets 256 MiB, each 50 MiB attention weight 64 MiB), 27 GiB more
for both i2v-A14B experts' 39 streamed blocks. Packed into buffers of ``CHUNK`` bytes (smaller
ones for the last bytes), each a power of two, they take 3% more (15% for a single block). A
buffer is allocated only when its first tensor moves in, and each tensor's old memory is freed as
it moves, so moving needs one buffer more than the tensors, not twice them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

CHUNK = 2**30
# CUDA's own allocations' alignment: a copy then reads whole memory transactions.
ALIGN = 256


class Layout(NamedTuple):
    """Each buffer's bytes (``chunks``) and each tensor's ``(buffer, byte offset)`` (``places``)."""

    chunks: list[int]
    places: list[tuple[int, int]]


def _power_of_two(size: int) -> int:
    return 1 << max(size - 1, 0).bit_length()


def layout(sizes: Sequence[int]) -> Layout:
    """Where tensors of ``sizes`` bytes go: the largest first, each into the first buffer with
    room, at an offset a multiple of ``ALIGN``. A new buffer holds ``CHUNK`` bytes (or the least
    power of two that holds the largest tensor), or less as the bytes left to place fall below
    that: the greatest power of two they fill, so that the last buffers waste little. Each is then
    shrunk to the least power of two that holds what it got."""
    aligned = [-(-size // ALIGN) * ALIGN for size in sizes]
    chunk = max(CHUNK, _power_of_two(max(sizes, default=0)))
    left = sum(aligned)
    capacity: list[int] = []
    used: list[int] = []
    places = [(0, 0)] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        need = aligned[index]
        buffer = next((k for k, filled in enumerate(used) if filled + need <= capacity[k]), len(used))
        if buffer == len(used):
            filled_by_left = _power_of_two(left + 1) // 2
            capacity.append(min(chunk, max(_power_of_two(need), filled_by_left)))
            used.append(0)
        places[index] = (buffer, used[buffer])
        used[buffer] += need
        left -= need
    return Layout([_power_of_two(filled) for filled in used], places)


def chunk_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """The bytes of the buffers ``move_into_chunks`` would allocate for ``tensors`` (which may be
    on the meta device)."""
    return sum(layout([t.numel() * t.element_size() for t in tensors]).chunks)


def move_into_chunks(tensors: Sequence[torch.Tensor], pin: bool) -> list[torch.Tensor]:
    """Move each of ``tensors`` (distinct; their ``.data`` is replaced) into the buffers of
    ``layout``, pinned when ``pin``, one buffer after another; returns the tensors' new data, a
    contiguous view into a buffer each, in the order of ``tensors``."""
    sizes = [t.numel() * t.element_size() for t in tensors]
    plan = layout(sizes)
    moved: dict[int, torch.Tensor] = {}
    number, buffer = -1, torch.empty(0, dtype=torch.uint8)
    for index in sorted(range(len(tensors)), key=plan.places.__getitem__):
        if plan.places[index][0] != number:
            number = plan.places[index][0]
            buffer = torch.empty(plan.chunks[number], dtype=torch.uint8, pin_memory=pin)
        offset, tensor = plan.places[index][1], tensors[index]
        view = buffer[offset:offset + sizes[index]].view(tensor.dtype).view(tensor.shape)
        view.copy_(tensor.detach())
        tensor.data = view
        moved[index] = view
    return [moved[index] for index in range(len(tensors))]
