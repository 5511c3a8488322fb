"""``generate(on_step=...)``: one ``StepEvent`` per sampling step, in order, naming the DiT (and
the clip), with the latent the video is decoded from; an exception it raises stops the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pipelines.images import gradient_image
from wan_runtime.cache import CacheConfig
from wan_runtime.pipelines import StepEvent, load_pipeline
from wan_runtime.pipelines.s2v import frames_made
from wan_runtime.solvers import make_solver

RUN = {"size": "64*64", "frame_num": 5, "sampling_steps": 4, "shift": 3.0, "seed": 3, "progress": False}


def record(events: list[StepEvent], copies: list[torch.Tensor] | None = None):
    def on_step(event: StepEvent) -> None:
        events.append(event)
        if copies is not None:
            copies.append(event.latent.clone())

    return on_step


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "text-and-image"])
def test_ti2v_tells_each_step_with_the_latent_the_video_comes_from(ti2v_pipeline, with_image):
    events: list[StepEvent] = []
    copies: list[torch.Tensor] = []
    image = gradient_image(64, 64) if with_image else None
    video = ti2v_pipeline.generate("a cat", image=image, on_step=record(events, copies), **RUN)
    schedule = make_solver("unipc", 4, 3.0).timesteps.tolist()
    assert [(e.step, e.steps, e.timestep, e.model, e.clip, e.clips) for e in events] == [
        (i + 1, 4, t, "dit", 1, 1) for i, t in enumerate(schedule)]
    assert torch.equal(ti2v_pipeline.vae.decode([events[-1].latent])[0], video)
    # The run never changed a latent it handed out.
    assert all(torch.equal(event.latent, copy) for event, copy in zip(events, copies, strict=True))
    assert not torch.equal(copies[0], copies[-1])
    # With an image its latent frame stays in place at every step.
    assert all(torch.equal(c[:, :1], copies[-1][:, :1]) for c in copies) == with_image


def test_i2v_names_the_expert_of_each_step(i2v_pipeline):
    events: list[StepEvent] = []
    i2v_pipeline.generate("a cat", image=gradient_image(64, 64), on_step=record(events), **RUN)
    models = [e.model for e in events]
    # Shift 3 over 4 steps: the high-noise expert for the steps above the boundary, then the other.
    assert models == [i2v_pipeline._expert(e.timestep, i2v_pipeline.spec.guide_scale)[0] for e in events]
    assert models[0] == "high_noise" and models[-1] == "low_noise"
    assert all(model in i2v_pipeline.dits for model in models)


def test_s2v_counts_the_steps_of_each_clip(s2v_root):
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32)
    pipeline.motion_frames = (9, 3)  # a short motion context keeps the clips quick
    speech = (0.3 * np.sin(np.arange(8000) / 9)).astype(np.float32)
    events: list[StepEvent] = []
    video = pipeline.generate("a man speaks", image=gradient_image(72, 56), audio=speech, size="64*64",
                              infer_frames=4, num_clip=2, sampling_steps=2, seed=1, progress=False,
                              on_step=record(events))
    assert video.shape[1] == frames_made(2, 4, start_from_ref=False) == 5  # the dry run's count
    assert [(e.clip, e.clips, e.step, e.steps, e.model) for e in events] == [
        (clip, 2, step, 2, "dit") for clip in (1, 2) for step in (1, 2)]


class Stop(Exception):
    pass


def test_an_exception_from_on_step_stops_the_run_and_the_next_is_unchanged(ti2v_root):
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32, offload_model=True)
    want = pipeline.generate("a cat", **RUN)
    seen = []

    def stop_at_two(event: StepEvent) -> None:
        seen.append(event.step)
        if event.step == 2:
            raise Stop

    assert pipeline.last_report is not None and pipeline.cache_report() == {}
    pipeline.generate("a cat", cache=CacheConfig(fbcache=True, fb_thresh=1.0), **RUN)
    assert pipeline.cache_report()
    with pytest.raises(Stop):
        pipeline.generate("a cat", on_step=stop_at_two, **RUN)
    assert seen == [1, 2]
    assert set(pipeline.residency.placement.values()) == {"cpu"}
    # The stopped run made no report, and the one before is not told as its.
    assert pipeline.last_report is None and pipeline.cache_report() == {}
    assert torch.equal(pipeline.generate("a cat", **RUN), want)


def test_an_s2v_run_stopped_in_a_later_clip_leaves_no_clip_reports(s2v_root):
    """The clips it finished are not told as a run's, as its last_report is not."""
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32)
    pipeline.motion_frames = (9, 3)
    speech = (0.3 * np.sin(np.arange(8000) / 9)).astype(np.float32)
    run = {"image": gradient_image(72, 56), "audio": speech, "size": "64*64", "infer_frames": 4,
           "num_clip": 2, "sampling_steps": 2, "seed": 1, "progress": False,
           "cache": CacheConfig(fbcache=True, fb_thresh=1.0)}
    pipeline.generate("a man speaks", **run)
    assert len(pipeline.clip_cache_reports) == 2

    def stop_in_clip_two(event: StepEvent) -> None:
        if event.clip == 2:
            raise Stop

    with pytest.raises(Stop):
        pipeline.generate("a man speaks", on_step=stop_in_clip_two, **run)
    assert pipeline.last_report is None and pipeline.cache_report() == {}
    assert pipeline.clip_cache_reports == []
