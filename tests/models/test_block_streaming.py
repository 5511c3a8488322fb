"""Streamed DiT blocks: in CPU memory between their forwards, on the device during their own
alone, the numbers unchanged. On a CPU run both places are the same memory, so the placement is
read from the bookkeeping (``BlockStreaming.loaded``); the GPU test checks the memory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.models.test_dit_parity import batch_contexts, make_inputs
from tests.pipelines.images import gradient_image
from tests.tolerances import COMPILED_VS_EAGER_FP32, rel_l2
from wan_runtime.errors import InputError
from wan_runtime.models import WanModel
from wan_runtime.models.compilation import compile_blocks
from wan_runtime.pipelines import load_pipeline
from wan_runtime.tiny_checkpoints import TINY_TI2V, random_dit

CONFIG = replace(TINY_TI2V, num_layers=4)
CPU = torch.device("cpu")


def forward(model):
    x, t, contexts, _ = make_inputs("ti2v", seed=1, per_token=True)
    with torch.no_grad():
        return model(x, t, batch_contexts(contexts))


def record_placement(model) -> list[tuple[int, set[int]]]:
    """(block index, the streamed blocks on the device) at each block's forward."""
    seen = []
    for index, block in enumerate(model.blocks):
        def recording(*args, _index=index, _forward=block.forward, **kwargs):
            seen.append((_index, set(model.block_streaming.loaded)))
            return _forward(*args, **kwargs)

        block.forward = recording
    return seen


@pytest.mark.parametrize(("count", "streamed"), [(1, [3]), (2, [2, 3]), (3, [1, 2, 3]), (10, [1, 2, 3])])
def test_each_streamed_block_is_on_the_device_for_its_own_forward(count, streamed):
    model = random_dit(CONFIG, seed=2).eval()
    want = forward(model)
    model.enable_block_streaming(count, CPU)
    assert model.block_streaming.indices == streamed  # the first block always stays
    seen = record_placement(model)
    assert torch.equal(forward(model), want)
    assert seen == [(i, {i} if i in streamed else set()) for i in range(4)]
    assert model.block_streaming.loaded == set()


def test_resident_modules_hold_all_but_the_streamed_blocks():
    model = random_dit(CONFIG, seed=2).enable_block_streaming(2, CPU)
    resident = {id(p) for p in model.resident_modules().parameters()}
    streamed = {id(p) for i in (2, 3) for p in model.blocks[i].parameters()}
    assert resident | streamed == {id(p) for p in model.parameters()} and not resident & streamed
    plain = random_dit(CONFIG)
    assert plain.resident_modules() is plain


def test_compiled_blocks_read_the_weights_put_in_place():
    """Streaming swaps a block's tensors between forwards (``tensor.data``): compiled blocks take
    parameters as inputs, so they compute with whatever tensors are in place at the call."""
    model = random_dit(CONFIG, seed=2).eval()
    compile_blocks(model)
    forward(model)
    for p in model.blocks[2].parameters():
        p.data = p.data * 1.5
    changed = random_dit(CONFIG, seed=2).eval()
    for p in changed.blocks[2].parameters():
        p.data = p.data * 1.5
    assert rel_l2(forward(model), forward(changed)) < COMPILED_VS_EAGER_FP32


@pytest.mark.parametrize("fp8", [False, True])
def test_the_streamed_blocks_alone_load_into_cpu_memory(ti2v_dit_dir, fp8):
    """``host_blocks`` loads the blocks streaming keeps onto the CPU, and every other weight
    straight onto ``device`` (the meta device stands for a GPU here), so that no weight passes
    through CPU memory that does not stay there."""
    model = WanModel.from_pretrained(ti2v_dit_dir, device="meta", host_blocks=1, merge_device=CPU, fp8=fp8)
    streamed = model.streamed_indices(1)
    assert list(streamed) == [len(model.blocks) - 1]
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        on_cpu = any(name.startswith(f"blocks.{i}.") for i in streamed)
        assert tensor.device == (CPU if on_cpu else torch.device("meta")), name
    assert model.enable_block_streaming(1, torch.device("meta")).block_streaming.indices == list(streamed)


def test_zero_streams_nothing():
    assert random_dit(CONFIG).enable_block_streaming(0, CPU).block_streaming is None


VIDEO = {"size": "64*64", "frame_num": 5, "sampling_steps": 3, "seed": 3}
SPEECH = (0.3 * np.sin(np.arange(8000) / 9)).astype(np.float32)
RUNS = {
    "ti2v-5B": VIDEO,
    "i2v-A14B": {**VIDEO, "image": gradient_image(64, 64)},
    "s2v-14B": {"size": "64*64", "infer_frames": 4, "sampling_steps": 2, "seed": 11, "num_clip": 1,
                "image": gradient_image(72, 56), "audio": SPEECH},
}


@pytest.mark.parametrize("task", list(RUNS))
def test_pipelines_with_streamed_blocks_make_the_same_video(request, task):
    """Every DiT (both i2v-A14B experts; the S2V DiT with its audio injection between blocks), with
    and without offloading, which then moves only the rest of each DiT."""
    root = request.getfixturevalue(f"{task.split('-')[0]}_root")
    want = load_pipeline(task, root, device="cpu", dtype=torch.float32).generate("a cat", progress=False,
                                                                                 **RUNS[task])
    for offload in (False, True):
        pipeline = load_pipeline(task, root, device="cpu", dtype=torch.float32, offload_model=offload,
                                 stream_blocks=2)
        for dit in pipeline.dits.values():
            count = len(dit.blocks)
            assert dit.block_streaming.indices == list(range(max(1, count - 2), count))
        assert torch.equal(pipeline.generate("a cat", progress=False, **RUNS[task]), want)


def test_a_pipeline_loads_the_blocks_it_streams_into_cpu_memory(ti2v_root, monkeypatch):
    """The DiT loads on the device, its streamed blocks on the CPU (here both are the CPU: the
    GPU test below sees the two places)."""
    given, load = [], WanModel.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        given.append(kwargs)
        return load(cls, path, **kwargs)

    monkeypatch.setattr(WanModel, "from_pretrained", classmethod(spy))
    load_pipeline("ti2v-5B", ti2v_root, device="cpu", stream_blocks=1)
    [kwargs] = given
    assert (kwargs["host_blocks"], kwargs["device"]) == (1, CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="placement on the device needs a GPU")
@pytest.mark.parametrize("fp8", [False, True])
def test_a_pipeline_on_cuda_keeps_only_its_streamed_blocks_in_pinned_cpu_memory(ti2v_root, fp8):
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cuda", stream_blocks=1, dit_fp8=fp8)
    dit = pipeline.dits["dit"]
    [streamed] = dit.block_streaming.indices
    for name, tensor in [*dit.named_parameters(), *dit.named_buffers()]:
        on_cpu = name.startswith(f"blocks.{streamed}.")
        want = ("cpu", True) if on_cpu else ("cuda", False)
        assert (tensor.device.type, tensor.is_pinned()) == want, name


@pytest.mark.parametrize(("options", "fragment"), [
    ({"stream_blocks": -1}, "stream_blocks must be a number of blocks from 0"),
    ({"stream_blocks": True}, "stream_blocks must be a number of blocks from 0"),
    ({"stream_blocks": 2, "dit_fsdp": True}, "stream_blocks keeps blocks in CPU memory and dit_fsdp"),
])
def test_bad_stream_blocks_is_refused(ti2v_root, options, fragment):
    with pytest.raises(InputError, match=fragment):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device memory needs a GPU")
def test_streamed_blocks_on_cuda_save_their_memory():
    """The device holds the rest of the model and one streamed block: the peak falls by about the
    other streamed blocks' bytes, for bitwise the same output, compiled too."""
    device = torch.device("cuda")
    config = replace(TINY_TI2V, num_layers=6, dim=1024, ffn_dim=4096, num_heads=8)
    block_bytes = sum(p.numel() * p.element_size() for p in random_dit(config).blocks[1].parameters())
    results = {}
    for count in (0, 4):
        model = random_dit(config, seed=2).eval().enable_block_streaming(count, device)
        model.resident_modules().to(device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        x, t, contexts, _ = make_inputs("ti2v", seed=1, per_token=True)
        with torch.no_grad():
            out = model(x.to(device), t.to(device), batch_contexts(contexts).to(device))
        results[count] = (out, torch.cuda.max_memory_allocated())
        if count:
            assert all(p.device.type == "cpu" and p.is_pinned() for p in model.blocks[5].parameters())
            compile_blocks(model)
            with torch.no_grad():
                compiled = model(x.to(device), t.to(device), batch_contexts(contexts).to(device))
            assert (compiled - out).abs().max() < 1e-3
    assert torch.equal(results[4][0], results[0][0])
    assert results[0][1] - results[4][1] >= 2.5 * block_bytes
