"""``StageGraphs``: the DiT's block stages replayed from graphs give the eager numbers; one graph a
kind of call, captured at its second call; inputs and outputs shared where they look alike, each
output copied out; new graphs when the weights move; nothing in a stage that a CUDA capture
refuses (a host read, a tensor made on the host). On a GPU, the real capture."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from tests.models.s2v_helpers import s2v_inputs
from wan_runtime.checks import check_cuda_graphs
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.errors import GraphCaptureError, InputError
from wan_runtime.models import WanModel
from wan_runtime.models.compilation import compile_blocks
from wan_runtime.models.cuda_graphs import CudaGraphBackend, RerunBackend, StageGraphs
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.tiny_checkpoints.dit import TINY_I2V, TINY_TI2V, random_dit
from wan_runtime.tiny_checkpoints.s2v import TINY_S2V


def _inputs(model: WanModel, seed: int, per_token: bool = False, size: int = 8):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c.in_dim, 2, size, size, generator=g)
    tokens = 2 * size * size // 4
    t = torch.full((1, tokens), 500.0 + seed) if per_token else torch.tensor([900.0 - seed])
    if per_token:
        t[:, : tokens // 2] = 0.0
    return x, t, torch.randn(1, 5, c.text_dim, generator=g)


def _graphed(model: WanModel) -> tuple[WanModel, StageGraphs, RerunBackend]:
    backend = RerunBackend()
    graphs = StageGraphs(backend)
    return copy.deepcopy(model).enable_cuda_graphs(graphs), graphs, backend


@pytest.mark.parametrize("per_token", [False, True])
def test_replayed_blocks_give_the_eager_numbers(per_token):
    model = random_dit(TINY_TI2V).eval()
    graphed, graphs, backend = _graphed(model)
    with torch.inference_mode():
        for seed in range(4):
            inputs = _inputs(model, seed, per_token)
            assert torch.equal(graphed(*inputs), model(*inputs))
    # The first call ran eagerly, the second was captured, and it and the others replayed.
    assert (backend.warm_ups, graphs.captures, graphs.replays) == (1, 1, 3)


def test_an_output_keeps_its_values_when_the_graph_replays_again():
    model = random_dit(TINY_TI2V).eval()
    graphed, graphs, _ = _graphed(model)
    with torch.inference_mode():
        tokens, cond = graphed.prepare(*_inputs(model, 0))
        graphed.run_blocks(tokens, cond)  # the warm-up
        first = graphed.run_blocks(tokens, cond)
        kept = first.clone()
        second = graphed.run_blocks(tokens * 2, cond)
    assert graphs.replays == 2 and not torch.equal(second, kept)
    assert torch.equal(first, kept)


def _i2v_inputs(c, g: torch.Generator, size: int = 8):
    latent = (1, c.out_dim, 2, size, size)
    image = (1, c.in_dim - c.out_dim, 2, size, size)
    text = torch.randn(1, 5, c.text_dim, generator=g)
    return torch.randn(latent, generator=g), torch.tensor([700.0]), text, torch.randn(image, generator=g)


def test_each_kind_of_call_has_its_own_graph_and_alike_ones_share_buffers():
    """Two experts of one shape share their input and output buffers; a stage split at block 1
    (the step cache's) and another size are other kinds."""
    backend = RerunBackend()
    graphs = StageGraphs(backend)
    high, low = (random_dit(TINY_I2V, seed=seed).eval().enable_cuda_graphs(graphs) for seed in (1, 2))
    g = torch.Generator().manual_seed(0)
    c = high.config
    with torch.inference_mode():
        for _ in range(2):
            high(*_i2v_inputs(c, g))
        held = graphs.held_bytes
        for _ in range(2):
            low(*_i2v_inputs(c, g))
        assert graphs.captures == 2 and graphs.held_bytes == held
        tokens, cond = high.prepare(*_i2v_inputs(c, g))
        for _ in range(2):
            first = high.run_blocks(tokens, cond, 0, 1)
            high.run_blocks(first, cond, 1)
        assert graphs.captures == 4
        for _ in range(2):
            high(*_i2v_inputs(c, g, size=6))
    assert graphs.captures == 5 and graphs.held_bytes > held


def _captured():
    """A graphed ti2v DiT, its graphs and their backend, once its forward of ``inputs`` has been
    warmed up and captured; and those inputs."""
    model = random_dit(TINY_TI2V).eval()
    graphed, graphs, backend = _graphed(model)
    inputs = _inputs(model, 0)
    with torch.inference_mode():
        for _ in range(2):
            graphed(*inputs)
    return graphed, graphs, backend, inputs


def test_moved_weights_get_new_graphs():
    graphed, graphs, backend, inputs = _captured()
    with torch.inference_mode():
        for param in graphed.parameters():  # what an offloaded model brought back has: new copies
            param.data = param.data.clone()
        graphed(*inputs)
        assert (backend.warm_ups, graphs.captures) == (2, 1)
        graphed(*inputs)
    assert graphs.captures == 2


def test_a_replaced_submodule_gets_new_graphs():
    graphed, graphs, backend, inputs = _captured()
    with torch.inference_mode():
        graphed.blocks[-1].ffn = copy.deepcopy(graphed.blocks[-1].ffn)  # new weights, new tensors
        graphed(*inputs)
    assert backend.warm_ups == 2


def test_release_drops_every_graph_and_buffer():
    graphed, graphs, backend, inputs = _captured()
    with torch.inference_mode():
        assert graphs.held_bytes > 0
        graphs.release()
        assert (graphs.held_bytes, backend.releases) == (0, 1)
        graphed(*inputs)  # eager again: a first call
    assert backend.warm_ups == 2 and graphs.captures == 1


class _CaptureRules(TorchDispatchMode):
    """Records what a CUDA capture refuses, on the meta device: a value read back to the host (a
    meta tensor has none), an output sized by values, a tensor the host made."""

    HOST_READS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive",
                  "masked_select", "repeat_interleave", "equal", "is_nonzero"}

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if name in self.HOST_READS:
            self.problems.append(f"{name} reads values on the host")
        elif any(t.device.type != "meta" for t in tensors):
            self.problems.append(f"{name} takes a tensor of the host")
        return func(*args, **kwargs)


def _on_meta(tree):
    return tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, tree)


def _block_stage_problems(model: WanModel, *args, **kwargs) -> list[str]:
    """What a capture refuses in ``model``'s blocks, run on the meta device after its
    ``prepare(*args, **kwargs)``."""
    with torch.inference_mode():
        tokens, cond = model.prepare(*args, **kwargs)
        meta = copy.deepcopy(model).to("meta")
        inputs, rules = _on_meta((tokens, cond)), _CaptureRules()
        with rules:
            meta.run_blocks(*inputs)
    return rules.problems


@pytest.mark.parametrize("per_token", [False, True])
def test_a_block_stage_holds_nothing_a_capture_refuses(per_token):
    model = random_dit(TINY_TI2V).eval()
    assert _block_stage_problems(model, *_inputs(model, 0, per_token)) == []


def test_an_s2v_block_stage_holds_nothing_a_capture_refuses():
    model = random_dit(TINY_S2V, model_class=WanModelS2V).eval()
    assert _block_stage_problems(model, **s2v_inputs(model.config, seed=0)) == []


def test_the_rules_find_a_host_read_and_a_host_tensor():
    rules = _CaptureRules()
    x, host, index = torch.ones(3, device="meta"), torch.tensor(2.0), torch.tensor([0, 2])
    with rules:
        x + host  # a value a graph would keep as it was at the capture
        x[index]  # index's tensors come in a list
    # A meta tensor has no value to read: the read fails after the rules have seen it.
    with rules, pytest.raises((RuntimeError, NotImplementedError)):
        x.sum().item()
    assert rules.problems == ["add takes a tensor of the host", "index takes a tensor of the host",
                              "_local_scalar_dense reads values on the host"]


@pytest.mark.parametrize(("settings", "message"), [
    ((torch.device("cpu"), 0, False, 1), "cuda_graphs needs a CUDA device, not cpu; run without it"),
    ((torch.device("cuda"), 3, False, 1), "cuda_graphs and stream_blocks do not combine: stream_blocks "
                                          "copies each streamed block's weights in"),
    ((torch.device("cuda"), 0, True, 1), "cuda_graphs and dit_fsdp do not combine: dit_fsdp gathers"),
    ((torch.device("cuda"), 0, False, 2), "cuda_graphs and ulysses_size do not combine: ulysses_size "
                                          "exchanges tokens"),
])
def test_settings_a_graph_cannot_serve_are_refused(settings, message):
    with pytest.raises(InputError, match=message):
        check_cuda_graphs(*settings)


def test_a_cuda_device_alone_is_allowed():
    check_cuda_graphs(torch.device("cuda:1"), 0, False, 1)


def test_graphs_on_the_cpu_are_refused():
    with pytest.raises(InputError, match="cuda_graphs needs a CUDA device, not cpu"):
        StageGraphs.on(torch.device("cpu"))


CPU = torch.device("cpu")
# What moves the weights or exchanges tokens as the blocks run, turned on in a model.
_UNGRAPHABLE = {
    "stream_blocks": lambda model: model.enable_block_streaming(2, CPU),
    "ulysses_size": lambda model: model.enable_sequence_parallel(SequenceParallel.planned(2)),
}


@pytest.mark.parametrize("option", _UNGRAPHABLE)
def test_a_model_refuses_graphs_with_what_they_cannot_hold_in_either_order(option):
    message = f"cuda_graphs and {option} do not combine"
    graphed = random_dit(TINY_TI2V).enable_cuda_graphs(StageGraphs(RerunBackend()))
    with pytest.raises(InputError, match=message):
        _UNGRAPHABLE[option](graphed)
    assert graphed.block_streaming is None and graphed.sequence_parallel is None
    with pytest.raises(InputError, match=message):
        _UNGRAPHABLE[option](random_dit(TINY_TI2V)).enable_cuda_graphs(StageGraphs(RerunBackend()))


def test_a_graphed_model_refuses_fsdp():
    graphed = random_dit(TINY_TI2V).enable_cuda_graphs(StageGraphs(RerunBackend()))
    with pytest.raises(InputError, match="cuda_graphs and dit_fsdp do not combine"):
        graphed.enable_fsdp(CPU)  # refused before it needs a process group


class _Capture:
    """``torch.cuda.graph`` in PyTorch's order: the capture's stream made current, then at the end
    the capture ended and the caller's stream back."""

    current = "caller's stream"

    def __init__(self, graph, pool=None, stream=None) -> None:
        self.stream = stream

    def __enter__(self) -> None:
        self.caller, _Capture.current = _Capture.current, self.stream

    def __exit__(self, *exc) -> None:
        _Capture.current = self.caller


class _BrokenCapture(_Capture):
    """A capture whose end fails, as it does after the stage broke it: the error comes before the
    caller's stream is back."""

    def __exit__(self, *exc) -> None:
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")


def _fake_backend(monkeypatch, capture: type[_Capture]) -> tuple[CudaGraphBackend, list[bool]]:
    """A ``CudaGraphBackend`` whose captures run as ``capture`` does, and its cache's emptyings."""
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: None)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _Capture.current)
    monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: setattr(_Capture, "current", stream))
    monkeypatch.setattr(_Capture, "current", "caller's stream")
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    backend = object.__new__(CudaGraphBackend)  # no CUDA stream or pool here
    backend.device, backend._pool, backend._stream, backend._failed = None, None, "capture's stream", False
    return backend, emptied


def test_a_failed_capture_names_its_cause_and_what_to_do(monkeypatch):
    backend, emptied = _fake_backend(monkeypatch, _BrokenCapture)

    def stage() -> None:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    with pytest.raises(GraphCaptureError, match=r"the DiT blocks could not be captured as a CUDA graph "
                                                r"\(RuntimeError: CUDA error: operation not permitted when "
                                                r"stream is capturing\); run without cuda_graphs"):
        backend.capture(stage)
    assert _Capture.current == "caller's stream"  # what runs next does not run on the capture's
    backend.release()  # the allocator may still count the capture as under way: left alone
    assert emptied == []


@pytest.mark.parametrize("capture", [_Capture, _BrokenCapture], ids=["ended", "end failed"])
def test_running_out_of_memory_in_a_capture_is_said_as_running_out_of_memory(monkeypatch, capture):
    backend, emptied = _fake_backend(monkeypatch, capture)

    def stage() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 2.00 GiB"):
        backend.capture(stage)
    assert _Capture.current == "caller's stream"
    backend.release()  # a capture that ended leaves the allocator free to empty its cache
    assert emptied == ([True] if capture is _Capture else [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("per_token", [False, True])
def test_cuda_graphs_replay_the_eager_numbers_on_a_gpu(per_token):
    """bfloat16 blocks with the GPU's kernels; the weights then move, as an offloaded expert's do
    when it comes back (new copies, the old ones held so that none lands where it was)."""
    device = torch.device("cuda")
    model = random_dit(TINY_TI2V).eval().set_compute_dtype(torch.bfloat16).to(device)
    graphs = StageGraphs.on(device)
    graphed = copy.deepcopy(model).enable_cuda_graphs(graphs)
    old = []
    with torch.inference_mode():
        for step in range(6):
            if step == 3:
                for param in graphed.parameters():
                    old.append(param.data)
                    param.data = param.data.clone()
            inputs = [t.to(device) for t in _inputs(model, step, per_token)]
            assert torch.equal(graphed(*inputs), model(*inputs))
        assert (graphs.captures, graphs.replays) == (2, 4)
        graphs.release()
    assert graphs.held_bytes == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_kinds_sharing_buffers_and_a_pool_replay_their_own_numbers_on_a_gpu(compiled):
    """What a graphed step cache runs on a GPU: block 0 and the rest apart, for two models (the
    experts) and two text conditions (the guidance branches), whose graphs share one pool and the
    buffers of inputs alike; with compiled blocks too."""
    device = torch.device("cuda")
    graphs = StageGraphs.on(device)

    def model(seed: int, graphed: bool) -> WanModel:
        dit = random_dit(TINY_TI2V, seed=seed).eval().set_compute_dtype(torch.bfloat16).to(device)
        dit = compile_blocks(dit) if compiled else dit
        return dit.enable_cuda_graphs(graphs) if graphed else dit

    def block_0_then_the_rest(dit: WanModel, x, t, context) -> torch.Tensor:
        tokens, cond = dit.prepare(x, t, context)
        return dit.run_blocks(dit.run_blocks(tokens, cond, 0, 1), cond, 1)

    pairs = [(model(seed, False), model(seed, True)) for seed in (0, 1)]
    with torch.inference_mode():
        for step in range(4):
            x, t, context = (tensor.to(device) for tensor in _inputs(pairs[0][0], step))
            for eager, graphed in pairs:
                for text in (context, -context):
                    want = block_0_then_the_rest(eager, x, t, text)
                    assert torch.equal(block_0_then_the_rest(graphed, x, t, text), want), step
        # Two stages of two models: 8 calls of each kind, the first eager, the others replayed.
        assert (graphs.captures, graphs.replays) == (4, 4 * 7)
        graphs.release()


@pytest.mark.parametrize("stage", [lambda x: x, lambda x: x[1:]], ids=["input", "view"])
def test_a_stage_that_hands_back_its_input_hands_back_no_buffer(stage):
    """``run_blocks(tokens, cond, 1)`` of a one-block DiT runs no block."""
    graphs, owner = StageGraphs(RerunBackend()), torch.nn.Linear(1, 1)
    with torch.inference_mode():  # as the pipelines run: a view keeps no link to its base
        first = graphs.run(owner, "none", stage, torch.zeros(3))
        graphs.run(owner, "none", stage, torch.ones(3))
    assert torch.equal(first, stage(torch.zeros(3)))
