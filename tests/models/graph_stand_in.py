"""A CPU stand-in for ``CudaGraphBackend``, so that ``StageGraphs``' bookkeeping runs in CI: a
"captured" stage replays by running its Python again on the static buffers, as a CUDA graph
replays its kernels on them. What only a GPU can show (a graph reading stale addresses, a capture
refused) is in the GPU tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class EagerReplay:
    """Counts its warm-ups, captures and releases."""

    def __init__(self) -> None:
        self.warm_ups = 0
        self.releases = 0

    def warm_up(self, work: Callable[[], Any]) -> Any:
        self.warm_ups += 1
        return work()

    def capture(self, work: Callable[[], None]) -> Callable[[], None]:
        return work

    def release(self) -> None:
        self.releases += 1
