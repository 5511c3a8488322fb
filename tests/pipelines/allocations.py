"""The most CPU memory some code holds at once, read from the profiler's allocation events: a
measurement of what a run allocates, storage resizes included (FSDP gathers a unit's weights by
resizing their storage, which no dispatch mode sees). Under gloo an all-gather also copies its
output once inside the collective, which NCCL does not; the counts here include it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile


def _walk(events: list) -> Iterator:
    for event in events:
        yield event
        yield from _walk(event.children)


def allocated_peak(fn: Callable[[], object]) -> int:
    """The most bytes the CPU allocator held at once while ``fn()`` ran, above what it held before."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        fn()
    tree = profiler.profiler.kineto_results.experimental_event_tree()
    allocations = sorted((e for e in _walk(tree) if e.tag == _EventType.Allocation),
                         key=lambda e: e.start_time_ns)
    if not allocations:
        return 0
    # Each event carries the allocator's running total, counted from some earlier point.
    first = allocations[0].extra_fields
    before = first.total_allocated - first.alloc_size
    return max(e.extra_fields.total_allocated for e in allocations) - before
