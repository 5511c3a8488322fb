"""Which of a pipeline's big models sit on the accelerator, for ``offload_model``.

Without offloading every model stays where it was loaded (on the pipeline's device). With it,
the big models live on the CPU and ``activate`` brings one onto the device, first sending the
others back, so only one of them occupies accelerator memory at a time. A model on the device is
a copy that stands in for its CPU tensors (``wan_runtime.models.device_copies``), and sending it
back puts them in place again: weights read from a memory-mapped file in its dtype (the text
encoder's bfloat16) stay file pages the kernel can drop, not a copy in CPU memory
(``host_memory``), as under ``t5_cpu`` (so the file must stay as it is while the pipeline lives).
The bookkeeping (``placement``) is kept apart from the tensors' devices so that the logic is
observable, and testable, on a CPU-only run where both places are the same device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from wan_runtime.models.device_copies import Swapped, module_tensors, swap_back, swap_in_copies

Placement = Literal["device", "cpu"]


class Residency:
    """The big modules of one pipeline, by name, and where each one is."""

    def __init__(self, device: torch.device, offload: bool) -> None:
        self.device = device
        self.offload = offload
        self._modules: dict[str, nn.Module] = {}
        self._moving: dict[str, nn.Module] = {}
        self.placement: dict[str, Placement] = {}
        # Each model on the device: its tensors, each with its CPU data.
        self._on_cpu: dict[str, Swapped] = {}

    def add(self, name: str, module: nn.Module, moving: nn.Module | None = None) -> None:
        """Track ``module``, which must already be where the policy wants it at rest: on the CPU
        when offloading, else on the device. ``moving``: the part of it that moves (default all;
        a DiT's streamed blocks stay in CPU memory)."""
        self._modules[name] = module
        self._moving[name] = module if moving is None else moving
        self.placement[name] = "cpu" if self.offload else "device"

    def _move(self, name: str, placement: Placement) -> None:
        if self.placement[name] == placement:
            return
        if placement == "device":
            self._on_cpu[name] = swap_in_copies(module_tensors(self._moving[name]), self.device)
        else:
            swap_back(self._on_cpu.pop(name))
        self.placement[name] = placement

    def activate(self, name: str) -> nn.Module:
        """Module ``name``, on the device; when offloading, every other module is sent to the CPU
        first, so that the two never share the accelerator."""
        if self.offload:
            for other in self._modules:
                if other != name:
                    self._move(other, "cpu")
        self._move(name, "device")
        return self._modules[name]

    @contextmanager
    def released_after(self) -> Iterator[None]:
        """``release`` when the body ends, however it ends (a run stopped by an exception, e.g.
        a cancel from ``on_step``, leaves no model on the device)."""
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """When offloading, send every module back to the CPU (e.g. before the VAE decodes)."""
        if self.offload:
            for name in self._modules:
                self._move(name, "cpu")
