"""The ops inside a captured CUDA graph (GPU only): nothing in them synchronises with the host or
breaks the capture, and a replay on new input values gives what eager calls give."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.cases import DEVICE, block_inputs, randn
from tests.kernels.test_compile import _block_tail
from tests.kernels.tolerances import assert_matches


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs need a GPU")
def test_block_tail_replays_in_a_cuda_graph(backend):
    static = block_inputs()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        _block_tail(*static)  # warm-up off the capture: Triton compiles, the allocator settles
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _block_tail(*static)
    # New activations and modulation rows (the first six inputs), then replay.
    for seed, t in enumerate(static[:6], start=20):
        t.copy_(randn(tuple(t.shape), t.dtype, seed=seed))
    graph.replay()
    torch.cuda.synchronize()
    for replayed, eager in zip(captured, _block_tail(*static), strict=True):
        assert_matches(replayed, eager, eager.dtype)
