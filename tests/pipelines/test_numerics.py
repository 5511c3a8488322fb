"""A run whose latent or video turns NaN or infinite raises ``NumericalError`` naming the step,
the model and what to try, instead of returning a blank video; watching takes no host sync."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import wan_kernels
from tests.lora.lora_writers import parameter_shapes, random_lora, write_official
from tests.pipelines.images import gradient_image
from tests.pipelines.poison import poison
from wan_runtime import NumericalError
from wan_runtime.lora import Lora
from wan_runtime.pipelines import load_pipeline
from wan_runtime.pipelines.numerics import FiniteWatch, remedy
from wan_runtime.tasks import LOW_NOISE

RUN = {"size": "64*64", "frame_num": 5, "sampling_steps": 5, "shift": 3.0, "seed": 3, "progress": False}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_watch_keeps_the_first_bad_step(bad):
    watch = FiniteWatch(torch.device("cpu"))
    latents = [torch.ones(2, 3)] * 2 + [torch.tensor([[1.0, bad]]), torch.tensor([[bad]]), torch.zeros(1)]
    for step, latent in enumerate(latents):
        watch.observe(step, latent)
    assert watch.first_bad_step() == 2


def test_watch_of_finite_latents_reports_none_and_takes_no_host_sync(monkeypatch):
    watch = FiniteWatch(torch.device("cpu"))
    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
            patch.setattr(torch.Tensor, name, _host_read)
        for step in range(4):
            watch.observe(step, torch.randn(8, 8))
    assert watch.first_bad_step() is None
    watch.check(4, _unused, _unused)


def _host_read(*args, **kwargs):
    raise AssertionError("a host read while watching")


def _unused(*args) -> str:
    raise AssertionError("described without a bad step")


def test_nan_from_a_step_of_ti2v_names_the_step_and_the_model(ti2v_pipeline, monkeypatch):
    [dit] = ti2v_pipeline.dits.values()
    poison(dit, monkeypatch, from_call=5)  # cond and uncond per step: the uncond of step 3
    with pytest.raises(NumericalError) as error:
        ti2v_pipeline.generate("a boat", **RUN)
    message = str(error.value)
    backend = wan_kernels.backend_for(torch.device("cpu"))
    assert f"step 3 of 5 (model 'ti2v', torch.float32, wan_kernels backend {backend!r})" in message
    # Float32 already, no cache: only what is left to try.
    assert "float32;" not in message and "step cache" not in message
    assert ("WAN_KERNELS_BACKEND=torch" in message) == (backend != "torch")
    assert message.endswith(f"{OVERFLOW}, and a DiT weight file damaged inside (download it again) gives NaN "
                            "every way")


OVERFLOW = "a guide scale or shift far from the task's defaults can also overflow"


@pytest.mark.parametrize(("backend", "cache_on", "dtype", "compiled", "fp8", "loras", "tries"), [
    ("triton", True, torch.bfloat16, True, True, True, "without the LoRAs (or at lower strengths), or with "
     "WAN_KERNELS_BACKEND=torch (no fused kernels), or without compile, or without the step cache, or "
     "without dit_fp8 (float8 weights), or in float32; "),
    ("torch", False, torch.bfloat16, False, False, False, "in float32; "),
    ("torch", False, torch.float32, False, True, False, "without dit_fp8 (float8 weights); "),
    ("torch", False, torch.float32, False, False, True, "without the LoRAs (or at lower strengths); "),
    ("torch", False, torch.float32, False, False, False, ""),
])
def test_remedy_names_only_what_the_run_did_not_do(backend, cache_on, dtype, compiled, fp8, loras, tries):
    advice = remedy(backend, cache_on, dtype, compiled, fp8, loras)
    assert advice.startswith((f"to find the cause, run again {tries}" if tries else "") + OVERFLOW)


def test_nan_with_float8_weights_names_them(ti2v_root, monkeypatch):
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32, dit_fp8=True)
    [dit] = pipeline.dits.values()
    poison(dit, monkeypatch, from_call=0)
    expected = r"\(model 'ti2v', torch.float32 with float8 weights, wan_kernels backend .*without dit_fp8"
    with pytest.raises(NumericalError, match=expected):
        pipeline.generate("a boat", **RUN)


def test_nan_with_a_lora_names_it_first(ti2v_root, tmp_path, monkeypatch):
    lora = write_official(tmp_path / "lora.safetensors", random_lora(parameter_shapes(ti2v_root), seed=4))
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32, loras=[Lora(lora)])
    [dit] = pipeline.dits.values()
    poison(dit, monkeypatch, from_call=0)
    with pytest.raises(NumericalError, match=r"run again without the LoRAs \(or at lower strengths\), or"):
        pipeline.generate("a boat", **RUN)


def test_nan_in_the_low_noise_expert_names_it(i2v_pipeline, monkeypatch):
    # Shift 3 over 5 steps: 2 high-noise steps, then the low-noise expert from step 3.
    poison(i2v_pipeline.dits[LOW_NOISE], monkeypatch, from_call=2)
    with pytest.raises(NumericalError, match=r"at sampling step 4 of 5 \(model 'low', torch.float32"):
        i2v_pipeline.generate("a cat", image=gradient_image(80, 60), **RUN)


def test_nan_from_the_vae_decode_is_named(ti2v_pipeline, monkeypatch):
    decode = ti2v_pipeline.vae.decode
    monkeypatch.setattr(ti2v_pipeline.vae, "decode", lambda z: [v / 0.0 for v in decode(z)])
    with pytest.raises(NumericalError, match=r"video .* latent is finite \(VAE decode in torch.float32\)"):
        ti2v_pipeline.generate("a boat", **RUN)


def test_nan_in_an_s2v_clip_names_the_clip(s2v_root, monkeypatch):
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32)
    pipeline.motion_frames = (9, 3)  # a short motion context keeps the clips quick
    [dit] = pipeline.dits.values()
    poison(dit, monkeypatch, from_call=5)  # 2 steps of cond and uncond per clip: clip 2's first uncond
    speech = (0.3 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    with pytest.raises(NumericalError, match=r"at sampling step 1 of 2 \(clip 2 of 2, model 's2v', torch"):
        pipeline.generate("a woman speaks", image=Image.new("RGB", (64, 64), (90, 60, 30)), audio=speech,
                          infer_frames=4, size="64*64", sampling_steps=2, num_clip=2, seed=1, progress=False)
