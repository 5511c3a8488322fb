"""The step cache inside the pipelines: exact when it computes, honest counts when it skips."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.pipelines.images import gradient_image
from wan_runtime.cache import CacheConfig, CacheManager, WanStages
from wan_runtime.errors import InputError
from wan_runtime.pipelines import load_pipeline

RUN = {"size": "64*64", "frame_num": 5, "sampling_steps": 5, "shift": 3.0, "seed": 3, "progress": False}
BIG = 1e9
EXACT = [
    CacheConfig(),
    CacheConfig(teacache=True, teacache_thresh=0.0, teacache_warmup=0, teacache_last_steps=0),
    CacheConfig(fbcache=True, fb_thresh=0.0, fb_warmup=0, fb_last_steps=0, fb_metric="residual_rel_l1"),
    CacheConfig(teacache=True, teacache_thresh=0.0, fbcache=True, fb_thresh=0.0),
]


def _count_full_runs(pipeline, calls: list):
    """Record ``(model name, start, stop)`` for every ``run_blocks`` of the pipeline's DiTs."""
    for name, model in pipeline.dits.items():
        def run_blocks(tokens, cond, start=0, stop=None, _name=name, _run=model.run_blocks):
            calls.append((_name, start, stop))
            return _run(tokens, cond, start, stop)

        model.run_blocks = run_blocks


@pytest.fixture(scope="module")
def ti2v_reference(ti2v_pipeline):
    image = gradient_image(80, 60)
    return image, ti2v_pipeline.generate("a cat", image=image, **RUN)


@pytest.mark.parametrize("config", EXACT, ids=["off", "teacache0", "fbcache0", "both0"])
def test_ti2v_is_bitwise_uncached_at_threshold_zero(ti2v_pipeline, ti2v_reference, config):
    image, reference = ti2v_reference
    video = ti2v_pipeline.generate("a cat", image=image, cache=config, **RUN)
    assert torch.equal(video, reference)
    report = ti2v_pipeline.cache_report()
    assert report == {} if not config.enabled else report["ti2v"]["cond"]["skipped"] == 0
    assert ti2v_pipeline.last_report.step_cache == report


def test_i2v_is_bitwise_uncached_at_threshold_zero(i2v_pipeline):
    image = gradient_image(80, 60)
    reference = i2v_pipeline.generate("a cat", image=image, **RUN)
    config = CacheConfig(teacache=True, teacache_thresh=0.0, fbcache=True, fb_thresh=0.0)
    assert torch.equal(i2v_pipeline.generate("a cat", image=image, cache=config, **RUN), reference)
    assert set(i2v_pipeline.cache_report()) == {"high", "low"}


def test_i2v_with_one_expert_unguided_is_bitwise_uncached_at_threshold_zero(i2v_pipeline):
    """The low-noise expert at guide scale 1 runs its conditional branch alone, cached or not."""
    image = gradient_image(80, 60)
    run = {**RUN, "guide_scale": (1.0, 3.5)}
    reference = i2v_pipeline.generate("a cat", image=image, **run)
    config = CacheConfig(teacache=True, teacache_thresh=0.0, fbcache=True, fb_thresh=0.0)
    assert torch.equal(i2v_pipeline.generate("a cat", image=image, cache=config, **run), reference)
    report = i2v_pipeline.cache_report()
    assert set(report["high"]) >= {"cond", "uncond"} and "uncond" not in report["low"]


def test_large_threshold_computes_exactly_the_forced_steps(i2v_root):
    pipeline = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32)
    calls: list = []
    _count_full_runs(pipeline, calls)
    config = CacheConfig(teacache=True, teacache_thresh=BIG)
    pipeline.generate("a cat", image=gradient_image(80, 60), cache=config, **RUN)
    report = pipeline.cache_report()
    # 5 steps: high-noise 2 (warmup, last), low-noise 3 (switch, skip, last).
    high, low = report["high"], report["low"]
    assert high["cond"]["forced_by"] == {"warmup": 1, "last_steps": 1} and high["cond"]["skipped"] == 0
    assert low["cond"]["forced_by"] == {"expert_switch": 1, "last_steps": 1} and low["cond"]["skipped"] == 1
    for name, entry in (("high_noise", high), ("low_noise", low)):
        full = sum(1 for call in calls if call == (name, 0, None))
        assert full == entry["cond"]["computed"] + entry["uncond"]["computed"]
        # The uncond branch follows the cond decisions, measuring nothing itself.
        measured = ("mean_metric", "metric_count")
        assert entry["cond"] == entry["uncond"] | {key: entry["cond"][key] for key in measured}
    assert len(calls) == 8  # 4 computed steps x 2 branches; the skipped step runs no block


def test_fbcache_skip_runs_only_the_first_block(ti2v_root):
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    calls: list = []
    _count_full_runs(pipeline, calls)
    pipeline.generate("a cat", cache=CacheConfig(fbcache=True, fb_thresh=BIG), **RUN)
    cond = pipeline.cache_report()["ti2v"]["cond"]
    assert (cond["computed"], cond["skipped"]) == (2, 3)
    assert calls.count(("dit", 0, 1)) == 10 and calls.count(("dit", 1, None)) == 4


def test_offloaded_residuals_follow_their_expert(i2v_root, monkeypatch):
    pipeline = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32, offload_model=True)
    moves: list = []
    monkeypatch.setattr(CacheManager, "move", lambda self, name, device: moves.append(name))
    pipeline.generate("a cat", image=gradient_image(80, 60), cache=CacheConfig(teacache=True), **RUN)
    assert moves == ["high", "low"] * 5


def test_poly_is_refused_before_any_model_runs(i2v_pipeline):
    with pytest.raises(InputError, match="no fitted coefficients for model 'high'"):
        i2v_pipeline.generate("a cat", image=gradient_image(80, 60),
                              cache=CacheConfig(teacache=True, teacache_policy="poly"), **RUN)
    with pytest.raises(InputError, match="CacheConfig"):
        i2v_pipeline.generate("a cat", image=gradient_image(80, 60), cache={"teacache": True}, **RUN)


def test_teacache_signals_are_the_models_own(ti2v_pipeline):
    """``linear`` compares what the first block's attention is given (norm1, then the time
    modulation); ``poly`` the time embedding the model computes for the step's timestep."""
    [dit] = ti2v_pipeline.dits.values()
    stages = WanStages(dit)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, dit.config.in_dim, 2, 4, 4, generator=generator)
    context = torch.randn(1, 7, dit.config.text_dim, generator=generator)
    given = []
    hook = dit.blocks[0].self_attn.register_forward_pre_hook(lambda module, args: given.append(args[0]))
    try:
        with torch.inference_mode():
            tokens, cond = stages.prepare(x, torch.tensor([700]), context, None)
            stages.run_blocks(tokens, cond, 0, 1)
            signal = stages.modulated_input(tokens, cond)
    finally:
        hook.remove()
    assert torch.equal(signal, given[0])
    assert torch.equal(stages.time_signal(700.0), cond.time_embed)


def test_an_expert_given_no_step_is_no_cache_model(i2v_root):
    """One step: the high-noise expert alone runs; offloading still places both experts."""
    pipeline = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32, offload_model=True)
    for config in (CacheConfig(fbcache=True), CacheConfig(teacache=True)):
        pipeline.generate("a cat", image=gradient_image(80, 60), cache=config, **{**RUN, "sampling_steps": 1})
        assert set(pipeline.cache_report()) == {"high"}


def test_a_teacache_skip_beside_fbcache_saves_all_blocks_but_the_first(ti2v_root):
    """FBCache runs block 0 at every step to measure, so a TeaCache skip saves the others only."""
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    calls: list = []
    _count_full_runs(pipeline, calls)
    config = CacheConfig(teacache=True, teacache_thresh=BIG, fbcache=True, fb_thresh=0.0)
    pipeline.generate("a cat", cache=config, **RUN)
    cond = pipeline.cache_report()["ti2v"]["cond"]
    assert cond["skipped_by"] == {"teacache": cond["skipped"]} and cond["skipped"] > 0
    blocks = pipeline.dits["dit"].config.num_layers
    run = sum((blocks if stop is None else stop) - start for _, start, stop in calls)
    assert cond["work_saved"] == pytest.approx(1 - run / (2 * RUN["sampling_steps"] * blocks))


def test_a_cache_that_cannot_skip_a_step_is_warned_of(i2v_pipeline, ti2v_pipeline):
    """Two steps an expert, warmup 1 and last_steps 1 each: every step is forced."""
    config = CacheConfig(fbcache=True, fb_thresh=BIG)
    with pytest.warns(UserWarning) as warned:
        i2v_pipeline.generate("a cat", image=gradient_image(80, 60), cache=config,
                              **{**RUN, "sampling_steps": 4, "shift": 5.0})
    told = [str(warning.message) for warning in warned if "cannot skip" in str(warning.message)]
    remedy = "give more sampling steps, or lower the cache's warmup or last_steps"
    assert told == [
        "the step cache cannot skip any step of model 'high' (2 steps): each is forced (FBCache's warmup 1 "
        f"and last_steps 1); {remedy}",
        "the step cache cannot skip any step of model 'low' (2 steps): each is forced (FBCache's warmup 1 "
        f"and last_steps 1; the switch of experts); {remedy}"]
    assert all(entry["cond"]["skipped"] == 0 for entry in i2v_pipeline.cache_report().values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ti2v_pipeline.generate("a cat", cache=config, **RUN)  # 5 steps: the middle ones may skip
    with pytest.warns(UserWarning, match="TeaCache's warmup 100 and last_steps 1"):
        ti2v_pipeline.generate("a cat", cache=CacheConfig(teacache=True, teacache_warmup=100), **RUN)
