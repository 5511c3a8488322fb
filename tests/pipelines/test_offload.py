"""Model placement: with ``offload_model`` only the model at work is on the device.

On a CPU run the device is the CPU, so the moves are observed through the pipeline's bookkeeping
(``residency.placement``) and its moves; ``Residency`` alone moves models to the meta device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.test_device_copies import run_out_of_memory_at_copy
from tests.pipelines.images import gradient_image
from wan_runtime.pipelines import load_pipeline
from wan_runtime.pipelines.base import TEXT_ENCODER
from wan_runtime.pipelines.residency import Residency
from wan_runtime.pipelines.s2v import AUDIO_ENCODER
from wan_runtime.tasks import DIT, HIGH_NOISE, LOW_NOISE

RUN = {"size": "64*64", "frame_num": 5, "sampling_steps": 5, "shift": 3.0, "seed": 3, "progress": False}
CPU = torch.device("cpu")


def _spy_on_moves(pipeline, moves: list):
    """Record ``(name, target)`` for every move of one of the pipeline's big models."""
    residency, move = pipeline.residency, pipeline.residency._move

    def recording(name, placement):
        if residency.placement[name] != placement:
            moves.append((name, pipeline.device if placement == "device" else CPU))
        move(name, placement)

    residency._move = recording


def _watch_forwards(pipeline, seen: list):
    """At every DiT forward, record which expert runs, the bookkeeping, and parameter devices."""
    def hook(name):
        def check(module, args):
            others = [m for n, m in pipeline.dits.items() if n != name]
            devices = {p.device for m in others for p in m.parameters()}
            seen.append((name, dict(pipeline.residency.placement), devices))
        return check

    for name, model in pipeline.dits.items():
        model.register_forward_pre_hook(hook(name))


def test_offload_keeps_only_the_active_expert_on_the_device(i2v_root):
    pipeline = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32, offload_model=True)
    assert set(pipeline.residency.placement.values()) == {"cpu"}, "big models load onto the CPU"
    moves, seen = [], []
    _spy_on_moves(pipeline, moves)
    _watch_forwards(pipeline, seen)
    pipeline.generate("a cat", image=gradient_image(80, 60), **RUN)

    assert [name for name, *_ in seen[::2]] == [HIGH_NOISE] * 2 + [LOW_NOISE] * 3  # cond + uncond per step
    for name, placement, other_devices in seen:
        assert placement[name] == "device"
        assert all(where == "cpu" for other, where in placement.items() if other != name)
        assert other_devices == {CPU}
    device = pipeline.device
    # The encoder comes and goes first; at the switch the high-noise expert leaves before the
    # low-noise one arrives; at the end everything is back on the CPU.
    assert moves == [
        (TEXT_ENCODER, device), (TEXT_ENCODER, CPU),
        (HIGH_NOISE, device),
        (HIGH_NOISE, CPU), (LOW_NOISE, device),
        (LOW_NOISE, CPU),
    ]
    assert set(pipeline.residency.placement.values()) == {"cpu"}


def test_without_offload_nothing_moves(i2v_root):
    pipeline = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32)
    moves = []
    _spy_on_moves(pipeline, moves)
    pipeline.generate("a cat", image=gradient_image(80, 60), **RUN)
    assert moves == []
    assert set(pipeline.residency.placement.values()) == {"device"}


@pytest.mark.parametrize("offload_model", [False, True])
def test_t5_cpu_keeps_the_text_encoder_on_the_cpu(ti2v_root, offload_model):
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32, t5_cpu=True,
                             offload_model=offload_model)
    moves = []
    _spy_on_moves(pipeline, moves)
    pipeline.generate("a cat", **RUN)
    assert TEXT_ENCODER not in pipeline.residency.placement
    assert all(name != TEXT_ENCODER for name, _ in moves)
    assert pipeline.text_encoder.device == CPU
    assert moves == ([("dit", pipeline.device), ("dit", CPU)] if offload_model else [])


def _s2v_run(pipeline) -> torch.Tensor:
    """Two 4-frame clips from 0.5 s of speech, with a small motion context for speed."""
    pipeline.motion_frames = (9, 3)
    speech = (0.3 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 300)).astype(np.float32)
    return pipeline.generate("a woman speaks", image=gradient_image(64, 64), audio=speech, infer_frames=4,
                             size="64*64", sampling_steps=2, seed=3, num_clip=2, progress=False)


@pytest.mark.parametrize("t5_cpu", [False, True])
def test_s2v_offload_brings_each_model_only_while_it_works(s2v_root, t5_cpu):
    """wav2vec2, then the text encoder (unless t5_cpu), then the DiT for each clip's steps; the
    VAE encodes and decodes between clips while the DiT is away."""
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32, offload_model=True,
                             t5_cpu=t5_cpu)
    moves, seen = [], []
    _spy_on_moves(pipeline, moves)
    _watch_forwards(pipeline, seen)
    _s2v_run(pipeline)
    device = pipeline.device
    text = [] if t5_cpu else [(TEXT_ENCODER, device), (TEXT_ENCODER, CPU)]
    clip = [(DIT, device), (DIT, CPU)]
    assert moves == [(AUDIO_ENCODER, device), (AUDIO_ENCODER, CPU), *text, *clip, *clip]
    assert seen and all(placement[DIT] == "device" for _, placement, _ in seen)
    assert set(pipeline.residency.placement.values()) == {"cpu"}


def test_s2v_bfloat16_and_convert_model_dtype(s2v_root):
    """bf16 keeps the official float32 islands (norms, modulation, the audio encoder) unless
    convert_model_dtype casts every DiT weight, as the official flag does."""
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.bfloat16)
    dit = pipeline.dits[DIT]
    assert dit.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    assert {p.dtype for p in dit.casual_audio_encoder.parameters()} == {torch.float32}
    video = _s2v_run(pipeline)
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    converted = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.bfloat16,
                              convert_model_dtype=True)
    assert {p.dtype for p in converted.dits[DIT].parameters()} == {torch.bfloat16}



@pytest.mark.skipif(not torch.cuda.is_available(), reason="a move to the device needs a GPU")
def test_a_model_back_from_the_device_has_its_cpu_tensors_again():
    """No copy on the way back: the same storage (a memory-mapped file's pages included); the
    device holds a copy while the model works, one model at a time."""
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    second.weight = first.weight  # one weight in two places, as umT5's embedding table
    first.register_buffer("scale", torch.ones(4))
    tied = torch.nn.Sequential(first, second)
    residency = Residency(torch.device("cuda"), offload=True)
    residency.add("tied", tied)
    residency.add("other", torch.nn.Linear(2, 2))
    before = {name: t.data_ptr() for name, t in [*tied.named_parameters(), *tied.named_buffers()]}
    want = tied(torch.ones(4))
    with torch.inference_mode():  # as the pipelines move them
        assert residency.activate("tied") is tied
        assert {t.device.type for t in [*tied.parameters(), *tied.buffers()]} == {"cuda"}
        torch.testing.assert_close(tied(torch.ones(4, device="cuda")).cpu(), want)
        residency.activate("other")
    assert residency.placement == {"tied": "cpu", "other": "device"}
    assert {name: t.data_ptr() for name, t in [*tied.named_parameters(), *tied.named_buffers()]} == before
    assert not any(t.is_inference() for t in tied.parameters())
    residency.release()
    assert {t.device.type for t in tied.parameters()} == {"cpu"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a move to the device needs a GPU")
def test_a_move_that_fails_midway_leaves_the_model_on_the_cpu(monkeypatch):
    """Out of memory at the second tensor: nothing stays on the GPU, and the next move works."""
    model = torch.nn.Linear(4, 4)
    residency = Residency(torch.device("cuda"), offload=True)
    residency.add("model", model)
    run_out_of_memory_at_copy(monkeypatch, 2)
    with pytest.raises(torch.OutOfMemoryError):
        residency.activate("model")
    monkeypatch.undo()
    assert residency.placement["model"] == "cpu" and {p.device.type for p in model.parameters()} == {"cpu"}
    residency.activate("model")
    residency.release()
    assert {p.device.type for p in model.parameters()} == {"cpu"}
