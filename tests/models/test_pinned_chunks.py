"""Streamed weights packed into buffers whose sizes are powers of two: the layout (no overlap,
aligned, a few percent over the bytes where pinning tensor by tensor takes half as much again),
and the move (the same values, views into the buffers); the GPU test reads the pinned allocator."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from benchmarks.release_configs import A14B
from wan_runtime.models import WanModel
from wan_runtime.models.pinned_chunks import ALIGN, CHUNK, chunk_bytes, layout, move_into_chunks
from wan_runtime.pipelines.memory_plan import prepare_dit
from wan_runtime.tiny_checkpoints import TINY_TI2V, random_dit

MIB = 2**20


def power_of_two_at_least(size: int) -> int:
    power = 1
    while power < size:
        power *= 2
    return power


@pytest.mark.parametrize("sizes", [
    [],
    [1],
    [0, 3, 0],
    [135 * MIB, 50 * MIB, 20480, 50 * MIB, 135 * MIB, 4],
    [CHUNK, 1, CHUNK - 1],
    [3 * CHUNK, 5],
    [7 * MIB] * 500,
])
def test_a_layout_places_every_tensor_inside_its_buffer_without_overlap(sizes):
    chunks, places = layout(sizes)
    assert all(c == power_of_two_at_least(c) for c in chunks)
    spans: dict[int, list[tuple[int, int]]] = {}
    for size, (buffer, offset) in zip(sizes, places, strict=True):
        assert offset % ALIGN == 0 and offset + size <= chunks[buffer]
        spans.setdefault(buffer, []).append((offset, offset + size))
    for ranges in spans.values():
        ranges.sort()
        assert all(end <= start for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False))
    assert sorted(spans) == list(range(len(chunks)))  # no buffer left empty


@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize(("count", "most"), [(39, 1.03), (2, 1.06), (1, 1.15)])
def test_a_14b_experts_streamed_blocks_take_a_few_percent_more_where_each_tensor_pinned_takes_half_more(
    fp8, count, most,
):
    """The module docstring's numbers: of an A14B expert's 40 blocks the last ``count``, in
    bfloat16 or float8."""
    with torch.device("meta"):
        model = prepare_dit(WanModel(A14B), torch.bfloat16, keep_float32=True, fp8=fp8)
    tensors = [t for block in model.blocks[-count:] for t in [*block.parameters(), *block.buffers()]]
    sizes = [t.numel() * t.element_size() for t in tensors]
    one_by_one = sum(power_of_two_at_least(size) for size in sizes)
    assert 1.5 < one_by_one / sum(sizes) < 1.55
    assert 1.0 < chunk_bytes(tensors) / sum(sizes) < most


def test_moved_tensors_keep_their_values_in_views_of_few_buffers():
    tensors = [torch.randn(3, 5), torch.randn(7).to(torch.bfloat16), torch.tensor(2.5),
               torch.empty(0, 4), torch.randn(4, 6).to(torch.float8_e4m3fn), torch.arange(9).view(3, 3).t()]
    wants = [t.clone() for t in tensors]
    chunks = layout([t.numel() * t.element_size() for t in tensors]).chunks
    moved = move_into_chunks(tensors, pin=False)
    storages = {m.untyped_storage().data_ptr(): m.untyped_storage().nbytes() for m in moved}
    assert sorted(storages.values()) == sorted(chunks) and len(chunks) < len(tensors)
    for tensor, view, want in zip(tensors, moved, wants, strict=True):
        assert tensor.data_ptr() == view.data_ptr() and view.is_contiguous()
        assert view.dtype == want.dtype and view.shape == want.shape
        assert torch.equal(view.float(), want.float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a GPU")
def test_streamed_blocks_pin_the_bytes_of_their_buffers():
    config = replace(TINY_TI2V, num_layers=6, dim=1024, ffn_dim=4000, num_heads=8)
    model = random_dit(config, seed=2).eval()
    tensors = [t for block in model.blocks[2:] for t in [*block.parameters(), *block.buffers()]]
    planned = chunk_bytes(tensors)
    # Active, not allocated: the allocator may hand out blocks an earlier test freed to its cache.
    before = torch.cuda.host_memory_stats().get("active_bytes.current", 0)
    model.enable_block_streaming(4, torch.device("cuda"))
    assert torch.cuda.host_memory_stats()["active_bytes.current"] - before == planned
    assert all(t.is_pinned() for t in tensors)
