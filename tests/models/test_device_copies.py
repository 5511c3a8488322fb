"""Weights swapped for device copies and back. On the CPU, where a CPU tensor cannot take meta
data in its place, the meta device shows only that no tensor changes before every copy is made;
the GPU-only tests of ``test_offload`` and ``test_block_streaming`` move real copies and back."""

from __future__ import annotations

import pytest
import torch

from wan_runtime.models.device_copies import module_tensors, swap_in_copies

META = torch.device("meta")


def tied_module() -> torch.nn.Module:
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    second.weight = first.weight  # one weight in two places, as umT5's embedding table
    first.register_buffer("scale", torch.ones(4))
    return torch.nn.Sequential(first, second)


def test_each_parameter_and_buffer_counts_once():
    module = tied_module()
    assert len(module_tensors(module)) == 4  # the tied weight, two biases, the buffer
    assert any(t is module.get_buffer("0.scale") for t in module_tensors(module))


def run_out_of_memory_at_copy(monkeypatch, number: int) -> None:
    """``Tensor.to`` raises ``torch.OutOfMemoryError`` at its ``number``-th call from now on."""
    copy, calls = torch.Tensor.to, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise torch.OutOfMemoryError("out of memory (a test)")
        return copy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", failing)


def test_a_copy_that_fails_midway_leaves_every_tensor_as_it_was(monkeypatch):
    """Out of memory at the third copy; a tensor given its copy before then would have failed
    with another error (a CPU tensor cannot take meta data)."""
    module = tied_module()
    run_out_of_memory_at_copy(monkeypatch, 3)
    with pytest.raises(torch.OutOfMemoryError):
        swap_in_copies(module_tensors(module), META)
    assert {t.device.type for t in module_tensors(module)} == {"cpu"}
