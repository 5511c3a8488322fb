"""``last_report``, the progress bar, seeds, and the dtype options of ``load_pipeline``."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.pipelines.images import gradient_image
from wan_runtime.models.dit_blocks import RMSNorm
from wan_runtime.pipelines import RunReport, RunSetup, StageOutOfMemory, load_pipeline
from wan_runtime.tasks import DEFAULT_NEGATIVE_PROMPT

RUN = {"size": "64*64", "frame_num": 5, "sampling_steps": 3, "progress": False}


def test_report_of_an_i2v_run(i2v_pipeline, capsys):
    video = i2v_pipeline.generate("a cat", image=gradient_image(90, 60), seed=-1, guide_scale=4,
                                  **{**RUN, "progress": True})
    report = i2v_pipeline.last_report
    assert isinstance(report, RunReport)
    assert (report.task, report.prompt, report.n_prompt) == ("i2v-A14B", "a cat", DEFAULT_NEGATIVE_PROMPT)
    assert report.seed >= 0
    assert report.size == f"{video.shape[3]}*{video.shape[2]}" == "64*48"
    assert (report.frame_num, report.sampling_steps, report.shift) == (5, 3, 5.0)
    assert report.sample_solver == "unipc"
    assert report.guide_scale == (4.0, 4.0)
    assert list(report.timings) == ["text_encode", "vae_encode", "denoise", "vae_decode"]
    assert all(seconds > 0 for seconds in report.timings.values())
    assert report.peak_memory_bytes is None
    # How the numbers were computed, which the CLI records for --settings_from too.
    assert report.setup == RunSetup("cpu", "float32", wan_kernels.backend_for("cpu"), compile=False)
    summary = report.summary()
    assert len(summary.splitlines()) == 5
    assert all(word in summary for word in (str(report.seed), "64*48", "denoise"))
    assert (f"computed on cpu in float32, wan_kernels backend {report.setup.kernels}, eager DiT blocks"
            in summary.splitlines())
    assert (i2v_pipeline.task, i2v_pipeline.fps) == ("i2v-A14B", 16)
    # The bar names the expert at work: both ran in these three steps (999, 937, 833).
    err = capsys.readouterr().err
    assert "expert=high_noise" in err and "expert=low_noise" in err

    # The reported seed reproduces the run; the video is a normal tensor that may be changed in place.
    image = gradient_image(90, 60)
    again = i2v_pipeline.generate("a cat", image=image, seed=report.seed, guide_scale=4, **RUN)
    assert torch.equal(video, again)
    video.mul_(0.5)


def test_report_of_a_ti2v_text_run(ti2v_pipeline):
    video = ti2v_pipeline.generate("a cat", n_prompt="blurry", seed=11, **{**RUN, "size": "96*64"})
    report = ti2v_pipeline.last_report
    assert video.shape == (3, 5, 64, 96) and video.dtype == torch.float32
    assert -1 <= video.min() and video.max() <= 1
    assert (report.n_prompt, report.seed, report.size, report.guide_scale) == ("blurry", 11, "96*64", 5.0)
    assert list(report.timings) == ["text_encode", "denoise", "vae_decode"]
    assert (ti2v_pipeline.task, ti2v_pipeline.fps) == ("ti2v-5B", 24)


def test_bfloat16_and_convert_model_dtype(ti2v_root):
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.bfloat16)
    dit = pipeline.dits["dit"]
    assert dit.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    norms = [p for m in dit.modules() if isinstance(m, RMSNorm) for p in m.parameters()]
    assert norms and all(p.dtype == torch.float32 for p in norms)  # the official float32 islands
    assert pipeline.text_encoder.dtype == torch.bfloat16 and pipeline.vae.dtype == torch.float32
    video = pipeline.generate("a cat", seed=1, **{**RUN, "sampling_steps": 2})
    assert video.dtype == torch.float32 and torch.isfinite(video).all()

    converted = load_pipeline(
        "ti2v-5B", ti2v_root, device="cpu", dtype=torch.bfloat16, convert_model_dtype=True
    )
    assert {p.dtype for p in converted.dits["dit"].parameters()} == {torch.bfloat16}


def test_running_out_of_memory_names_the_stage(ti2v_root, monkeypatch):
    """As a ``torch.OutOfMemoryError`` still, with the models sent back to the CPU."""
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32, offload_model=True)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")

    monkeypatch.setattr(pipeline.vae, "decode", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError) as caught:
        pipeline.generate("a cat", **RUN)
    assert isinstance(caught.value, StageOutOfMemory)
    assert (caught.value.stage, caught.value.stage_name) == ("vae_decode", "VAE decode")
    assert str(caught.value) == "CUDA out of memory. Tried to allocate 2.00 GiB."
    assert set(pipeline.residency.placement.values()) == {"cpu"}
