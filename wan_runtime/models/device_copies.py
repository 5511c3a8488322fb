"""A module's weights swapped for copies on another device, in place, and back.

Offloading (``wan_runtime.pipelines.residency``) and block streaming (``block_streaming``) both
keep each weight's CPU tensor and, while the weights work, put a copy on the device in its place
(``tensor.data``): the parameters stay the same objects, so hooks and compiled blocks, which take
them as inputs, see the copies, and the way back costs no copy, only putting the CPU tensors back.
The weights do not change while they work, so the CPU tensors stay right.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

Swapped = list[tuple[torch.Tensor, torch.Tensor]]


def module_tensors(module: nn.Module) -> list[torch.Tensor]:
    """``module``'s parameters and buffers, each once."""
    return list({id(t): t for t in [*module.parameters(), *module.buffers()]}.values())


def swap_in_copies(
    tensors: Iterable[torch.Tensor], device: torch.device, non_blocking: bool = False
) -> Swapped:
    """Put a copy on ``device`` in place of each tensor's data; returns each tensor with its former
    data, for ``swap_back``. Every copy is made before any is put in place, so a copy that fails
    (out of memory) leaves every tensor as it was."""
    swapped = [(tensor, tensor.data) for tensor in tensors]
    copies = [data.to(device, non_blocking=non_blocking) for _, data in swapped]
    for (tensor, _), copy in zip(swapped, copies, strict=True):
        tensor.data = copy
    return swapped


def swap_back(swapped: Swapped) -> None:
    """Put back the data ``swap_in_copies`` replaced (the copies are dropped)."""
    for tensor, data in swapped:
        tensor.data = data
