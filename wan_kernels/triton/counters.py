"""Device counters for kernels whose last program to finish does the launch's final step (the
one-launch reductions of ``rel_error``, ``RowConfig.one_launch``): each program takes a ticket with
an atomic add, the one that draws the last does the step and puts the counter back to 0.

A counter must be 0 before a launch, and no two launches that may run at the same time may share
one: each stream's eager calls take one, each call captured in a CUDA graph its own (graphs may be
replayed on several streams at once). Counters come from zeroed blocks per device, handed out for
good and never freed, as graphs keep the addresses they captured. A block is zeroed only outside a
capture (inside one, the zeroing would be captured and replayed, not run), so eager calls add one
once half of the last is taken; a capture that finds none left zeroes a counter of its own inside
the graph (one more node, run at every replay). 16 bytes apart, every counter is an aligned
pointer, as a new allocation is: Triton compiles one kernel for all of them, and a capture never
compiles.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

COUNTERS_A_BLOCK = 4096
_SPACING = 4  # int32 elements: 16 bytes


@dataclass
class _DeviceCounters:
    blocks: list[torch.Tensor] = field(default_factory=list)
    taken: int = 0  # of the last block
    by_stream: dict[int, torch.Tensor] = field(default_factory=dict)

    def add_block(self, device: torch.device) -> None:
        block = torch.zeros(COUNTERS_A_BLOCK * _SPACING, dtype=torch.int32, device=device)
        if device.type == "cuda":
            # Zeroed on this stream, but its counters go to others too, whose launches must not
            # run before the zeros are written: once a block, the host waits for them.
            torch.cuda.current_stream(device).synchronize()
        self.blocks.append(block)
        self.taken = 0

    def take(self) -> torch.Tensor | None:
        if not self.blocks or self.taken == COUNTERS_A_BLOCK:
            return None
        self.taken += 1
        return self.blocks[-1][(self.taken - 1) * _SPACING]


_counters: dict[torch.device, _DeviceCounters] = {}
_lock = threading.Lock()


def capturing(device: torch.device) -> bool:
    """Whether work queued on ``device``'s current stream is being captured into a CUDA graph."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def counter_for(device: torch.device) -> torch.Tensor:
    """A 0-d int32 counter at 0 for a launch on ``device``'s current stream."""
    in_capture = capturing(device)
    with _lock:
        counters = _counters.setdefault(device, _DeviceCounters())
        if in_capture:
            counter = counters.take()
            if counter is None:
                counter = torch.zeros(_SPACING, dtype=torch.int32, device=device)[0]
            return counter
        if not counters.blocks or counters.taken > COUNTERS_A_BLOCK // 2:
            counters.add_block(device)
        stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
        if stream not in counters.by_stream:
            counters.by_stream[stream] = counters.take()
        return counters.by_stream[stream]
