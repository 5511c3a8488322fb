"""Model placement: with ``offload_model`` only the model at work is on the device.

On a CPU run the device is the CPU, so the moves are observed through the pipeline's bookkeeping
(``residency.placement``) and through the ``.to`` calls each model receives.
"""

from __future__ import annotations

import pytest
import torch

from tests.pipelines.images import gradient_image
from wan_runtime.pipelines import load_pipeline
from wan_runtime.pipelines.base import TEXT_ENCODER
from wan_runtime.pipelines.i2v import HIGH_NOISE, LOW_NOISE

RUN = {"size": "64*64", "frame_num": 5, "sampling_steps": 5, "shift": 3.0, "seed": 3, "progress": False}
CPU = torch.device("cpu")


def _spy_on_moves(pipeline, moves: list):
    """Record ``(name, target)`` for every ``.to`` call on the pipeline's big models."""
    modules = {**pipeline.dits, TEXT_ENCODER: pipeline.text_encoder.model}
    for name, module in modules.items():
        def to(*args, _name=name, _to=module.to, **kwargs):
            moves.append((_name, torch.device(args[0])))
            return _to(*args, **kwargs)

        module.to = to


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
