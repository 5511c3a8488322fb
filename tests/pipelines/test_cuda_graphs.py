"""``cuda_graphs=True``: the pipelines' videos when the DiT blocks replay from graphs are the eager
videos, step caches that skip included; the graphs serve one denoising loop (each video, each s2v
clip), a stopped run's too. The graphs here are ``RerunBackend``'s (a stage replayed by running it
again); a GPU's are in ``tests/models/test_cuda_graphs.py`` and ``benchmarks/gpu_pipelines.py``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.pipelines.images import gradient_image
from wan_runtime.cache import CacheConfig
from wan_runtime.errors import InputError
from wan_runtime.models.cuda_graphs import RerunBackend, StageGraphs
from wan_runtime.pipelines import Pipeline, load_pipeline

RUN = {"frame_num": 5, "sampling_steps": 4, "shift": 3.0, "seed": 3, "progress": False}
# Skips from the third step on: the cached residuals are read from graphs' outputs.
SKIPPING = CacheConfig(fbcache=True, fb_thresh=10.0, fb_warmup=2)


def _graphed(pipeline: Pipeline) -> RerunBackend:
    """``pipeline``'s DiTs replaying from graphs given them after the load: the pipeline knows."""
    backend = RerunBackend()
    graphs = StageGraphs(backend)
    for dit in pipeline.dits.values():
        dit.enable_cuda_graphs(graphs)
    assert pipeline.stage_graphs is graphs
    return backend


@pytest.mark.parametrize("cache", [None, SKIPPING], ids=["uncached", "fbcache"])
def test_ti2v_video_is_the_eager_one(ti2v_root, ti2v_pipeline, cache):
    graphed = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    backend = _graphed(graphed)
    image = gradient_image(80, 60)
    video = graphed.generate("a cat", image=image, size="64*64", cache=cache, **RUN)
    assert torch.equal(video, ti2v_pipeline.generate("a cat", image=image, size="64*64", cache=cache, **RUN))
    if cache is not None:
        assert graphed.cache_report()["ti2v"]["cond"]["skipped"] == 1
    # Block 0 and the rest apart under FBCache, each kind warmed up once, captured once.
    kinds = 1 if cache is None else 2
    graphs = graphed.stage_graphs
    assert (backend.warm_ups, graphs.captures) == (kinds, kinds) and graphs.replays > 4
    assert backend.releases == 1 and graphs.held_bytes == 0
    # The run's report counts them, and the next run its own.
    assert graphed.last_report.cuda_graphs == (graphs.captures, graphs.replays)
    assert "CUDA graphs: " in graphed.last_report.summary() and ti2v_pipeline.last_report.cuda_graphs is None
    graphed.generate("a cat", image=image, size="64*64", cache=cache, **RUN)
    assert graphed.last_report.cuda_graphs[0] == kinds


def test_i2v_video_is_the_eager_one_and_each_expert_has_its_own_graphs(i2v_root, i2v_pipeline):
    """With ``offload_model`` (on the CPU the weights stay where they are: ``gpu_pipelines`` moves
    them on a GPU)."""
    graphed = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32, offload_model=True)
    backend = _graphed(graphed)
    image = gradient_image(80, 60)
    video = graphed.generate("a cat", image=image, size="64*64", **RUN)
    assert torch.equal(video, i2v_pipeline.generate("a cat", image=image, size="64*64", **RUN))
    # One kind of call for each expert, both branches alike: one warm-up each; the high-noise
    # expert's graphs dropped when the low-noise one takes over, the latter's after the last step.
    assert backend.warm_ups == 2 and backend.releases == 2


def test_s2v_each_clip_has_its_own_graphs(s2v_root):
    eager, graphed = (load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32) for _ in range(2))
    backend = _graphed(graphed)
    portrait = gradient_image(72, 56)
    speech = (0.3 * np.sin(np.arange(8000) / 9)).astype(np.float32)
    run = {"infer_frames": 4, "size": "64*64", "sampling_steps": 3, "seed": 11, "num_clip": 2,
           "progress": False}
    videos = []
    for pipeline in (eager, graphed):
        pipeline.motion_frames = (9, 3)  # the tiny motion context of tests/pipelines/test_s2v.py
        videos.append(pipeline.generate("a woman speaks", image=portrait, audio=speech, **run))
    assert torch.equal(videos[1], videos[0])
    assert backend.warm_ups == 2 and backend.releases == 2
    # Each clip: its first step warms up, its second captures, the steps after replay.
    assert graphed.last_report.cuda_graphs == (2, 2 * (2 * 3 - 1))


class Stop(Exception):
    pass


def test_a_stopped_run_drops_its_graphs(ti2v_root):
    graphed = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    backend = _graphed(graphed)

    def stop(event) -> None:
        if event.step == 3:
            raise Stop

    with pytest.raises(Stop):
        graphed.generate("a cat", size="64*64", on_step=stop, **RUN)
    assert backend.releases == 1 and graphed.stage_graphs.held_bytes == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"device": "cpu", "cuda_graphs": True}, "cuda_graphs needs a CUDA device, not cpu"),
    ({"device": "cpu", "cuda_graphs": "yes"}, "cuda_graphs must be True or False, got 'yes'"),
])
def test_what_cannot_be_graphed_is_refused_before_loading(ti2v_root, options, message):
    with pytest.raises(InputError, match=message):
        load_pipeline("ti2v-5B", ti2v_root, **options)


def test_the_estimate_of_a_graphed_pipeline_counts_the_graphs_buffers(ti2v_root, ti2v_pipeline):
    graphed = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    _graphed(graphed)
    video = {"size": "64*64", "frame_num": 5}
    steps = [next(s for s in pipeline.estimate_memory(**video).stages if s.stage == "denoise")
             for pipeline in (ti2v_pipeline, graphed)]
    assert steps[1].activations > steps[0].activations


def test_a_graphed_run_counts_its_peak_from_an_emptied_cache(monkeypatch):
    """A graphed run reports reserved memory: what the allocator kept of the run before goes back
    before the count starts."""
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append("reset"))
    for graphs in (None, StageGraphs(RerunBackend())):
        Pipeline._start_run(SimpleNamespace(device=torch.device("cuda"), stage_graphs=graphs))
    assert calls == ["reset", "empty", "reset"]


def test_dits_with_graphs_of_their_own_are_refused_before_the_run(i2v_root):
    pipeline = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32)
    for dit in pipeline.dits.values():
        dit.enable_cuda_graphs(StageGraphs(RerunBackend()))
    message = ("the DiTs of a pipeline replay from one StageGraphs; give each DiT's enable_cuda_graphs "
               "the same one")
    with pytest.raises(InputError, match=message):
        pipeline.generate("a cat", image=gradient_image(80, 60), size="64*64", **RUN)
