"""CUDA graphs of the DiT's block stages (``cuda_graphs``).

A block stage (``run_blocks(tokens, cond, start, stop)``) launches a few dozen kernels per block.
Replayed from a CUDA graph, those launches cost the host nothing and the GPU waits for no launch
between kernels; the stages around them (patch and text embeddings, the head) stay eager, and so
does the step cache's host decision between block 0 and the rest.

A graph serves one kind of call: the model, ``start`` and ``stop``, the weights' addresses, and
the shapes, dtypes and strides of every input tensor (with the inputs' other values, e.g. the
token grid). The first call of a kind runs eagerly on the capture's stream (Triton compiles its
kernels, cuBLAS makes its workspace, ``torch.compile`` traces, outside any capture) and its result
is used; the second is captured, then replayed, as is every later one: the inputs are copied into
the graph's static buffers, the graph replays, and its output is copied out.

Memory: the graphs of one ``StageGraphs`` share one memory pool for what their kernels allocate,
and the graphs whose inputs look alike (the two experts', the two guidance branches') read one set
of input buffers; outputs alike are written to one buffer. Sharing is safe because the graphs run
on one stream one at a time, and each output is copied out of its buffer before another graph
replays, so what one graph leaves in the pool is never read again. Over eager blocks a stage thus
holds a copy of its inputs and two of its output (the buffer and the copy out) more.

The graphs record the weights' addresses: a model offloaded and brought back (new addresses) gets
new graphs, and ``release`` drops them all (the pipeline does at the end of each denoising loop,
so that the VAE has the pool's memory). Weights moved while a stage runs (streamed blocks, FSDP's
gathers) cannot be graphed at all, nor collectives (sequence parallelism):
``wan_runtime.checks.check_cuda_graphs``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten


class GraphBackend(Protocol):
    """How ``StageGraphs`` runs a first call and captures a graph (a CUDA device's, or a test's)."""

    def warm_up(self, work: Callable[[], Any]) -> Any:
        """``work()``'s result, run where captures run, outside any capture."""

    def capture(self, work: Callable[[], None]) -> Callable[[], None]:
        """``work`` captured; returns what replays it."""

    def release(self) -> None:
        """Give back the memory the captured graphs no longer hold."""


class CudaGraphBackend:
    """Captures on one side stream of ``device`` into one memory pool, as PyTorch's CUDA graph
    notes ask: the first calls run on that stream too, so that what libraries set up per stream
    (cuBLAS's workspace) is set up before a capture."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = torch.cuda.Stream(device)
        self._pool = torch.cuda.graph_pool_handle()

    def warm_up(self, work: Callable[[], Any]) -> Any:
        main = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(main)
        with torch.cuda.stream(self._stream):
            result = work()
        main.wait_stream(self._stream)
        # Made on the side stream, read on the main one: kept from reuse until the main one is done.
        tree_map(lambda t: t.record_stream(main) if isinstance(t, torch.Tensor) else t, result)
        return result

    def capture(self, work: Callable[[], None]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream):
            work()
        return graph.replay

    def release(self) -> None:
        # The pool's memory goes back to the allocator once no graph holds it; emptied, it is the
        # next stage's (the VAE's) to take.
        torch.cuda.empty_cache()


class RerunBackend:
    """Replays a stage by running its Python again on the graph's buffers, where a CUDA graph would
    replay its kernels on them: ``StageGraphs``' bookkeeping on a device without graphs (the memory
    estimate's meta device counts what a graphed step holds; tests run on the CPU). Counts its
    warm-ups and releases."""

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


def _describe(leaf: Any) -> Hashable:
    if isinstance(leaf, torch.Tensor):
        return (tuple(leaf.shape), leaf.stride(), leaf.dtype, leaf.device)
    return leaf


@dataclass
class _Graph:
    inputs: list[torch.Tensor | None]  # a static buffer for each tensor input, None for the others
    output: torch.Tensor
    replay: Callable[[], None]


class StageGraphs:
    """CUDA graphs of the stages ``run`` is given, for the models of one pipeline (see the module's
    notes). ``captures`` and ``replays`` count what it did since the last ``release``.
    ``capture_at_first_call``: a kind's first call, once run eagerly, is captured and replayed at
    once (twice the work), so that one call of each kind holds what every replay does."""

    def __init__(self, backend: GraphBackend, capture_at_first_call: bool = False) -> None:
        self.backend = backend
        self.capture_at_first_call = capture_at_first_call
        self._first: dict[Hashable, tuple[torch.Size, torch.dtype]] = {}  # kinds run once: their output
        self._graphs: dict[Hashable, _Graph] = {}
        self._inputs: dict[Hashable, list[torch.Tensor | None]] = {}
        self._outputs: dict[Hashable, torch.Tensor] = {}
        self.captures = 0
        self.replays = 0

    @classmethod
    def on(cls, device: torch.device) -> StageGraphs:
        """Graphs captured on CUDA ``device``."""
        return cls(CudaGraphBackend(device))

    def run(
        self, model: nn.Module, stage: Hashable, work: Callable[..., torch.Tensor], *inputs: Any
    ) -> torch.Tensor:
        """``work(*inputs)``, a tensor, for ``model``'s ``stage``: eager for the first call of its
        kind, then from its graph. ``work`` must read ``inputs`` and ``model``'s weights alone."""
        leaves, spec = tree_flatten(inputs)
        looks = (spec, tuple(_describe(leaf) for leaf in leaves))
        key = (id(model), stage, _addresses(model), looks)
        graph = self._graphs.get(key)
        if graph is None:
            if key not in self._first:
                out = self.backend.warm_up(lambda: work(*inputs))
                self._first[key] = (out.shape, out.dtype)
                if not self.capture_at_first_call:
                    return out
                del out
            graph = self._graphs[key] = self._capture(key, looks, leaves, spec, work)
        for buffer, leaf in zip(graph.inputs, leaves, strict=True):
            if buffer is not None:
                buffer.copy_(leaf)
        graph.replay()
        self.replays += 1
        return graph.output.clone()

    def _capture(
        self, key: Hashable, looks: Hashable, leaves: list[Any], spec: Any, work: Callable[..., torch.Tensor]
    ) -> _Graph:
        if looks not in self._inputs:
            self._inputs[looks] = [torch.empty_like(leaf) if isinstance(leaf, torch.Tensor) else None
                                   for leaf in leaves]
        buffers = self._inputs[looks]
        for buffer, leaf in zip(buffers, leaves, strict=True):
            if buffer is not None:
                buffer.copy_(leaf)
        shape, dtype = self._first[key]
        device = next(leaf.device for leaf in leaves if isinstance(leaf, torch.Tensor))
        out_key = (tuple(shape), dtype, device)
        if out_key not in self._outputs:
            self._outputs[out_key] = torch.empty(shape, dtype=dtype, device=device)
        output = self._outputs[out_key]
        static = tree_unflatten([leaf if buffer is None else buffer
                                 for buffer, leaf in zip(buffers, leaves, strict=True)], spec)

        def body() -> None:
            output.copy_(work(*static))

        replay = self.backend.capture(body)
        self.captures += 1
        return _Graph(buffers, output, replay)

    @property
    def held_bytes(self) -> int:
        """The bytes of the graphs' input and output buffers (their memory pool apart)."""
        buffers = [b for inputs in self._inputs.values() for b in inputs if b is not None]
        return sum(b.nbytes for b in [*buffers, *self._outputs.values()])

    def release(self) -> None:
        """Drop every graph and buffer: the next call of each kind runs eagerly again."""
        self._first.clear()
        self._graphs.clear()
        self._inputs.clear()
        self._outputs.clear()
        self.captures = self.replays = 0
        self.backend.release()


def _addresses(model: nn.Module) -> tuple[int, ...]:
    # Where the weights are: a model offloaded and brought back has new copies of them, which the
    # old graphs would not read. Every parameter moves with its model, so two tell.
    params = list(model.parameters())
    return (params[0].data_ptr(), params[-1].data_ptr()) if params else ()
