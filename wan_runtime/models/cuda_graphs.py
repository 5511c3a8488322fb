"""CUDA graphs of the DiT's block stages (``cuda_graphs``).

A block stage (``run_blocks(tokens, cond, start, stop)``) launches a few dozen kernels per block.
Replayed from a CUDA graph, those launches cost the host nothing and the GPU waits for no launch
between kernels; the stages around them (patch and text embeddings, the head) stay eager, and so
does the step cache's host decision between block 0 and the rest.

A graph serves one kind of call: the model, ``start`` and ``stop``, the weights' addresses, and
the shapes, dtypes and strides of every input tensor (with the inputs' other values, e.g. the
token grid). Every call copies its inputs into buffers kept for calls that look alike. The first
call of a kind runs eagerly on them, on the capture's stream (Triton compiles its kernels, cuBLAS
makes its workspace, ``torch.compile`` traces, outside any capture), and its result is used; the
second is captured, then replayed, as is every later one, and the output is copied out.

Memory: the graphs of one ``StageGraphs`` share one memory pool for what their kernels allocate,
and the graphs whose inputs look alike (the two experts', the two guidance branches') read one set
of input buffers; outputs alike are written to one buffer. Sharing is safe because the graphs run
on one stream one at a time, and each output is copied out of its buffer before another graph
replays, so what one graph leaves in the pool is never read again. Over eager blocks a stage thus
holds a copy of its inputs and its output's buffer more (the copy out stands for the eager output),
and what its kernels allocate stays in the pool, out of reach of the eager work around them.

The graphs record the weights' addresses: a model offloaded and brought back (new addresses) gets
new graphs, and ``release`` drops them all (the pipeline does when i2v-A14B's experts take over
from each other, whose graphs never replay again, and after each denoising loop, so that the VAE
has the pool's memory). Weights moved while a stage runs (streamed blocks, FSDP's
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

from wan_runtime.checks import check_cuda_graphs
from wan_runtime.errors import GraphCaptureError


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
        self._failed = False

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
        caller = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph, pool=self._pool, stream=self._stream):
                work()
        except Exception as err:
            # A capture's end that fails leaves the capture's stream current: work after the
            # error (a caller's retry without graphs) belongs on the caller's.
            torch.cuda.set_stream(caller)
            if isinstance(err, torch.OutOfMemoryError):
                raise  # the capture ended; the run's out-of-memory advice applies
            self._failed = True
            # The end of a broken capture raises its own error over the cause: name the cause.
            cause = err.__context__ if isinstance(err.__context__, Exception) else err
            if isinstance(cause, torch.OutOfMemoryError):
                raise cause from None  # the end's error follows from it; the advice applies as well
            first = " ".join(str(cause).split())[:300]
            raise GraphCaptureError(f"the DiT blocks could not be captured as a CUDA graph "
                                    f"({type(cause).__name__}: {first}); run without cuda_graphs") from err
        return graph.replay

    def release(self) -> None:
        # After a failed capture the allocator may still count the capture as under way (PyTorch
        # tells it the capture ended only once the end succeeds), for the process's life, and
        # emptying its cache could fail over the capture's own error.
        if self._failed:
            return
        # The pool's memory goes back to the allocator once no graph holds it; emptied, it is the
        # next stage's (the VAE's) to take. The next graphs take a new pool, so that nothing left
        # in this one can tie them to it.
        torch.cuda.empty_cache()
        self._pool = torch.cuda.graph_pool_handle()


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
    output: torch.Tensor
    replay: Callable[[], None]


class StageGraphs:
    """CUDA graphs of the stages ``run`` is given, for the models of one pipeline (see the module's
    notes). ``captures`` and ``replays`` count what it did since it was made.
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
        check_cuda_graphs(device, stream_blocks=0, dit_fsdp=False, ulysses_size=1)
        return cls(CudaGraphBackend(device))

    def run(
        self, model: nn.Module, stage: Hashable, work: Callable[..., torch.Tensor], *inputs: Any
    ) -> torch.Tensor:
        """``work(*inputs)``, a tensor, for ``model``'s ``stage``: eager for the first call of its
        kind, then from its graph. ``work`` must read ``inputs`` and ``model``'s weights alone."""
        leaves, spec = tree_flatten(inputs)
        looks = (spec, tuple(_describe(leaf) for leaf in leaves))
        key = (id(model), stage, _addresses(model), looks)
        buffers = self._buffers(looks, leaves)
        graph = self._graphs.get(key)
        if graph is None:
            # The first call and the capture read the same buffers: what the first call set up
            # for its inputs (a compiled block's guards on their strides) holds in the capture too.
            static = tree_unflatten([leaf if buffer is None else buffer
                                     for buffer, leaf in zip(buffers, leaves, strict=True)], spec)
            if key not in self._first:
                out = self.backend.warm_up(lambda: work(*static))
                self._first[key] = (out.shape, out.dtype)
                if not self.capture_at_first_call:
                    # A stage that hands back its input or a view of it (no block to run) hands
                    # back a buffer's memory, which the next call overwrites.
                    return out.clone() if any(_within(out, buffer) for buffer in buffers) else out
                del out
            graph = self._graphs[key] = self._capture(key, buffers, static, work)
        graph.replay()
        self.replays += 1
        return graph.output.clone()

    def _buffers(self, looks: Hashable, leaves: list[Any]) -> list[torch.Tensor | None]:
        """The input buffers of calls that look like ``looks``, ``leaves`` copied in."""
        if looks not in self._inputs:
            self._inputs[looks] = [torch.empty_like(leaf) if isinstance(leaf, torch.Tensor) else None
                                   for leaf in leaves]
        buffers = self._inputs[looks]
        for buffer, leaf in zip(buffers, leaves, strict=True):
            if buffer is not None:
                buffer.copy_(leaf)
        return buffers

    def _capture(
        self, key: Hashable, buffers: list[torch.Tensor | None], static: Any,
        work: Callable[..., torch.Tensor],
    ) -> _Graph:
        shape, dtype = self._first[key]
        device = next(buffer.device for buffer in buffers if buffer is not None)
        out_key = (tuple(shape), dtype, device)
        if out_key not in self._outputs:
            self._outputs[out_key] = torch.empty(shape, dtype=dtype, device=device)
        output = self._outputs[out_key]

        def body() -> None:
            output.copy_(work(*static))

        replay = self.backend.capture(body)
        self.captures += 1
        return _Graph(output, replay)

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
        self.backend.release()


def _within(tensor: torch.Tensor, buffer: torch.Tensor | None) -> bool:
    # By address, as an inference-mode view keeps no ``_base`` to follow back to its buffer.
    if buffer is None:
        return False
    start = buffer.data_ptr()
    return start <= tensor.data_ptr() < start + buffer.nbytes


def _addresses(model: nn.Module) -> tuple[int, ...]:
    # Where the weights are: a model offloaded and brought back has new copies of them, which the
    # old graphs would not read. Each one's, as a new copy may land where another was. Read from
    # the modules' own tables, live at every call: half the time of ``parameters()``'s walk (a
    # 14B DiT's 1,095 tensors, milliseconds of the host's time a stage, after the step cache's
    # decision has waited for the GPU).
    addresses, modules = [], [model]
    while modules:
        module = modules.pop()
        addresses += [t.data_ptr() for t in (*module._parameters.values(), *module._buffers.values())
                      if t is not None]
        modules += [child for child in module._modules.values() if child is not None]
    return tuple(addresses)
