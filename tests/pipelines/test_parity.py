"""Our pipelines against the official ``WanI2V.generate`` / ``WanTI2V.generate``, end to end, on the
same tiny checkpoint folders, the same seed, float32 on the CPU."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.pipelines.images import gradient_image
from tests.pipelines.official_pipelines import official_i2v, official_ti2v
from tests.solvers.lightning_euler import LightningEuler
from tests.tolerances import rel_l2
from wan_runtime.lora.lightning_folder import LIGHTNING_SAMPLING
from wan_runtime.solvers import make_solver
from wan_runtime.tasks import TASKS

# Same operations on the same noise: our DiT, text encoder and VAE differ from the official ones
# by float32 summation order only, which a few steps compound. Measured on these cases: at most
# 9.2e-7 (latents) and 1.6e-6 (video); the bounds leave room for another BLAS.
LATENT_VS_OFFICIAL = 1e-4
VIDEO_VS_OFFICIAL = 1e-3

PROMPT = "a golden cat walking on the beach at sunset, cinematic"


def _capture_decode(vae, store: list):
    """Wrap ``vae.decode`` to keep the latents it is given (the final latents of a run)."""
    decode = vae.decode

    def recording(zs, *args, **kwargs):
        store.append(zs[0].detach().clone())
        return decode(zs, *args, **kwargs)

    vae.decode = recording


@pytest.fixture(scope="module")
def official_i2v_pipe(i2v_root):
    return official_i2v(i2v_root)


@pytest.fixture(scope="module")
def official_ti2v_pipe(ti2v_root):
    return official_ti2v(ti2v_root)


def _compare(ours, official, run_ours, run_official) -> tuple[float, float]:
    got_latents, want_latents = [], []
    _capture_decode(ours.vae, got_latents)
    _capture_decode(official.vae, want_latents)
    try:
        got = run_ours()
        with torch.no_grad():
            want = run_official()
    finally:
        del ours.vae.decode, official.vae.decode
    assert got.shape == want.shape and got.dtype == torch.float32
    assert want_latents[0].abs().mean() > 0.1, "degenerate reference latents"
    latent_error, video_error = rel_l2(got_latents[0], want_latents[0]), rel_l2(got, want)
    print(f"latents {latent_error:.2e}, video {video_error:.2e}")
    assert latent_error <= LATENT_VS_OFFICIAL
    assert video_error <= VIDEO_VS_OFFICIAL
    return latent_error, video_error


@pytest.mark.parametrize(
    ("solver", "steps", "shift", "size", "image_size", "guide", "frame_num"),
    [
        ("unipc", 5, 3.0, "128*96", (100, 60), (3.0, 5.0), 5),
        ("dpm++", 4, 5.0, "64*64", (48, 80), (4.0, 2.5), 9),
        ("unipc", 3, 5.0, "64*64", (100, 60), (3.0, 5.0), 1),
        # The low-noise expert unguided: its unconditional forward is left out.
        ("unipc", 4, 5.0, "64*64", (100, 60), (1.0, 3.5), 5),
    ],
)
def test_i2v_matches_official(
    i2v_pipeline, official_i2v_pipe, solver, steps, shift, size, image_size, guide, frame_num
):
    timesteps = make_solver(solver, steps, shift).timesteps
    boundary = TASKS["i2v-A14B"].boundary * 1000
    assert (timesteps >= boundary).any() and (timesteps < boundary).any(), "both experts must run"
    image = gradient_image(*image_size)
    width, height = (int(v) for v in size.split("*"))
    kwargs = {"frame_num": frame_num, "shift": shift, "sample_solver": solver, "sampling_steps": steps,
              "seed": 42}
    _compare(
        i2v_pipeline,
        official_i2v_pipe,
        lambda: i2v_pipeline.generate(PROMPT, image=image, size=size, guide_scale=guide, progress=False,
                                      **kwargs),
        lambda: official_i2v_pipe.generate(PROMPT, image, max_area=width * height, guide_scale=guide,
                                           offload_model=False, **kwargs),
    )


@pytest.mark.parametrize(
    ("solver", "size", "image_size", "frame_num"),
    [
        ("unipc", "96*64", None, 9),
        ("dpm++", "64*64", None, 1),
        ("unipc", "128*64", (90, 70), 5),
        ("dpm++", "64*96", (50, 120), 9),
    ],
)
def test_ti2v_matches_official(ti2v_pipeline, official_ti2v_pipe, solver, size, image_size, frame_num):
    image = None if image_size is None else gradient_image(*image_size, seed=1)
    width, height = (int(v) for v in size.split("*"))
    kwargs = {"frame_num": frame_num, "shift": 5.0, "sample_solver": solver, "sampling_steps": 4,
              "guide_scale": 4.5, "seed": 7}
    _compare(
        ti2v_pipeline,
        official_ti2v_pipe,
        lambda: ti2v_pipeline.generate(PROMPT, image=image, size=size, progress=False, **kwargs),
        lambda: official_ti2v_pipe.generate(PROMPT, img=image, size=(width, height), max_area=width * height,
                                            offload_model=False, **kwargs),
    )


def test_ti2v_at_guide_scale_one_runs_one_forward_per_step(ti2v_pipeline, official_ti2v_pipe, monkeypatch):
    """At guide scale 1 the official pipeline also runs the unconditional branch, which its
    guidance formula then cancels but for rounding; ours leaves it out and makes the same video."""
    calls = []
    (dit,) = ti2v_pipeline.dits.values()
    forward = dit.forward
    monkeypatch.setattr(dit, "forward", lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs))
    kwargs = {"frame_num": 5, "shift": 5.0, "sample_solver": "unipc", "sampling_steps": 4, "guide_scale": 1.0,
              "seed": 7}
    _compare(
        ti2v_pipeline,
        official_ti2v_pipe,
        lambda: ti2v_pipeline.generate(PROMPT, size="64*64", progress=False, **kwargs),
        lambda: official_ti2v_pipe.generate(PROMPT, size=(64, 64), max_area=64 * 64, offload_model=False,
                                            **kwargs),
    )
    assert len(calls) == 4


@pytest.mark.parametrize(("task", "guide"), [
    ("i2v-A14B", (1.0, 1.0)), ("i2v-A14B", (3.0, 5.0)), ("ti2v-5B", 1.0),
])
def test_euler_matches_the_lightning_loop(i2v_pipeline, official_i2v_pipe, ti2v_pipeline, official_ti2v_pipe,
                                          monkeypatch, task, guide):
    """``euler`` at the Lightning LoRAs' settings (4 steps, shift 5; fractional timesteps, two per
    i2v expert) against the official pipeline loop sampling with the Lightning release's scheduler
    (diffusers' Euler on its schedule), as that release's pipelines do; ti2v with an image, whose
    first-frame tokens sit at timestep 0."""
    ours, official = (i2v_pipeline, official_i2v_pipe) if task == "i2v-A14B" else (ti2v_pipeline,
                                                                                    official_ti2v_pipe)
    monkeypatch.setattr(sys.modules[type(official).__module__], "FlowUniPCMultistepScheduler", LightningEuler)
    image = gradient_image(100, 60, seed=2)
    kwargs = {"frame_num": 5, "shift": 5.0, "sampling_steps": 4, "guide_scale": guide, "seed": 11}
    official_args = {"max_area": 64 * 64, "offload_model": False, "sample_solver": "unipc", **kwargs}
    if task == "ti2v-5B":
        official_args["size"] = (64, 64)
    _compare(
        ours,
        official,
        lambda: ours.generate(PROMPT, image=image, size="64*64", sample_solver="euler", progress=False,
                              **kwargs),
        lambda: official.generate(PROMPT, img=image, **official_args),
    )


def test_the_lightning_settings_are_generate_arguments(ti2v_pipeline):
    ti2v_pipeline.generate(PROMPT, size="64*64", frame_num=1, seed=3, progress=False, **LIGHTNING_SAMPLING)
    report = ti2v_pipeline.last_report
    assert (report.sample_solver, report.sampling_steps, report.shift, report.guide_scale) == (
        "euler", 4, 5.0, 1.0)
