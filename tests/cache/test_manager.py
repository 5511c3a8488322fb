"""The manager on a fake DiT: priority, CFG following, experts, failsafes, downsampling, telemetry."""

from __future__ import annotations

import contextlib

import pytest
import torch

import wan_kernels
from tests.cache.fake_model import FakeDiT, tokens
from wan_runtime.cache import CacheConfig, CacheManager
from wan_runtime.cache.gate import FBCacheGate, Lifecycle
from wan_runtime.cache.policies import FITTED, Policy

BIG = 1e9


def run(config, inputs, schedule=None, models=None, uncond=None, timesteps=None):
    """Drive the manager; ``inputs`` per step (cond), ``uncond`` per step or None (no uncond)."""
    schedule = schedule or ["m"] * len(inputs)
    models = models or {name: FakeDiT() for name in set(schedule)}
    log: list[str] = []
    manager = CacheManager(config, models, schedule, timesteps or [1000.0 - i for i in range(len(inputs))],
                           log=log.append)
    outs = []
    for step, x in enumerate(inputs):
        outs.append(manager.forward(step, "cond", x))
        if uncond is not None:
            outs.append(manager.forward(step, "uncond", uncond[step]))
    return manager, manager.finish(), outs, log, models


def test_threshold_zero_outputs_equal_the_uncached_ones():
    inputs = [tokens(v) for v in (1.0, 1.01, 1.02, 1.03)]
    for config in (CacheConfig(teacache=True, teacache_thresh=0.0), CacheConfig(fbcache=True, fb_thresh=0.0)):
        _, report, outs, _, models = run(config, inputs)
        assert all(torch.equal(out, models["m"].full(x)) for out, x in zip(outs, inputs, strict=True))
        assert report["m"]["cond"]["skipped"] == 0


def test_fbcache_wins_over_teacache_and_says_so():
    inputs = [tokens(v) for v in (1.0, 1.01, 1.02, 1.03)]
    both = CacheConfig(teacache=True, teacache_thresh=BIG, fbcache=True, fb_thresh=BIG)
    _, report, _, log, models = run(both, inputs)
    assert "FBCache takes precedence" in log[0]
    assert report["m"]["cond"]["skipped_by"] == {"fbcache": 2}
    # FBCache skips still run the first block.
    assert models["m"].calls == [(0, 1), (1, 4), (0, 1), (0, 1), (0, 1), (1, 4)]
    tea_only = CacheConfig(teacache=True, teacache_thresh=BIG, fbcache=True, fb_thresh=0.0)
    _, report, _, _, _ = run(tea_only, inputs)
    assert report["m"]["cond"]["skipped_by"] == {"teacache": 2}


def test_uncond_follows_cond_with_its_own_residual():
    inputs = [tokens(v) for v in (1.0, 1.01, 1.02)]
    uncond = [tokens(v) for v in (2.0, 2.5, 2.9)]  # would compute on its own metric
    config = CacheConfig(fbcache=True, fb_thresh=0.05, fb_last_steps=0)
    _, report, outs, _, models = run(config, inputs, uncond=uncond)
    assert report["m"]["uncond"]["skipped"] == report["m"]["cond"]["skipped"] == 2
    # Skipped uncond output: its own first block plus its own residual from step 0.
    first = uncond[1] * 1.5 + 1
    residual = models["m"].full(uncond[0]) - (uncond[0] * 1.5 + 1)
    assert torch.allclose(outs[3], first + residual)
    assert report["m"]["uncond"]["mean_metric"]["fbcache"] > 0.05  # measured, but not deciding


def test_uncond_nonfinite_metric_is_a_failsafe_of_its_own():
    inputs = [tokens(v) for v in (1.0, 1.0, 1.0)]
    uncond = [tokens(1.0), tokens(float("nan")), tokens(1.0)]
    _, report, _, _, _ = run(CacheConfig(fbcache=True, fb_thresh=0.5, fb_last_steps=0), inputs, uncond=uncond)
    assert report["m"]["cond"]["skipped"] == 2
    # Step 1 computes and captures a NaN reference, so step 2 measures NaN and computes again.
    assert report["m"]["uncond"]["failsafes"] == {"nonfinite_metric": 2}
    # Without a separate uncond diff there is nothing to notice.
    config = CacheConfig(fbcache=True, fb_thresh=0.5, fb_last_steps=0, fb_cfg_sep_diff=False)
    _, report, _, _, _ = run(config, inputs, uncond=uncond)
    assert report["m"]["uncond"]["failsafes"] == {}


def test_each_expert_keeps_its_own_state_and_the_switch_computes():
    inputs = [tokens(1.0)] * 6
    config = CacheConfig(teacache=True, teacache_thresh=BIG, teacache_warmup=0, teacache_last_steps=0)
    _, report, _, _, _ = run(config, inputs, schedule=["high"] * 3 + ["low"] * 3)
    assert report["high"]["cond"]["forced_by"] == {"cold": 1}
    assert report["low"]["cond"]["forced_by"] == {"expert_switch": 1}
    assert report["high"]["cond"]["skipped"] == report["low"]["cond"]["skipped"] == 2


def test_an_expert_done_for_good_frees_its_cached_tensors_at_the_switch():
    config = CacheConfig(teacache=True, fbcache=True, fb_thresh=BIG)
    models = {"high": FakeDiT(), "low": FakeDiT()}
    manager = CacheManager(config, models, ["high"] * 2 + ["low"] * 2, [1000.0, 900.0, 800.0, 700.0],
                           log=lambda line: None)
    for step in range(2):
        for branch in ("cond", "uncond"):
            manager.forward(step, branch, tokens(1.0))
    held = manager._models["high"].residual_bytes()
    assert held > 0
    manager.forward(2, "cond", tokens(1.0))
    # The switch frees the high-noise expert's tensors, never read again; the telemetry keeps its peak.
    assert manager._models["high"].residual_bytes() == 0 and manager._models["low"].residual_bytes() > 0
    assert manager.residual_bytes()["high"] == held



def test_forgetting_a_branch_drops_its_tensors_or_its_signal_alone():
    config = CacheConfig(teacache=True, fbcache=True)
    manager = CacheManager(config, {"m": FakeDiT()}, ["m"], [1000.0], log=lambda line: None)
    for branch in ("cond", "uncond"):
        manager.forward(0, branch, tokens(1.0))
    state = manager._models["m"].branches
    assert state["cond"].tea_signal is not None
    manager.forget("m", "cond", signal_only=True)
    assert state["cond"].tea_signal is None and state["cond"].tea_residual is not None
    manager.forget("m", "cond")
    assert state["cond"].nbytes() == 0 and state["uncond"].nbytes() > 0


def test_shape_and_dtype_mismatch_force_compute_and_are_counted():
    wide = tokens(1.0, length=6)
    inputs = [tokens(1.0), wide, wide, tokens(1.0, length=6, dtype=torch.float16)]
    config = CacheConfig(fbcache=True, fb_thresh=BIG, fb_last_steps=0)
    _, report, outs, _, models = run(config, inputs)
    cond = report["m"]["cond"]
    assert cond["failsafes"] == {"shape_mismatch": 1, "dtype_mismatch": 1}
    assert cond["skipped"] == 1
    teacache = CacheConfig(teacache=True, teacache_thresh=BIG, teacache_last_steps=0)
    _, report, _, _, _ = run(teacache, [tokens(1.0), tokens(1.0), tokens(1.0, length=6)])
    assert report["m"]["cond"]["failsafes"] == {"shape_mismatch": 1}


def test_downsample_measures_every_nth_token():
    base = tokens(1.0, length=8)
    changed = base.clone()
    changed[:, 1::2] = 5.0  # only odd tokens change
    for downsample, skipped in ((1, 0), (2, 1)):
        config = CacheConfig(fbcache=True, fb_thresh=0.01, fb_downsample=downsample, fb_last_steps=0)
        _, report, _, _, _ = run(config, [base, changed])
        assert report["m"]["cond"]["skipped"] == skipped


@pytest.mark.parametrize("metric", ["hidden_rel_l1", "residual_rel_l1", "hidden_rel_l2"])
def test_downsampled_reference_keeps_the_metric_and_is_smaller(metric):
    # Token k of step s is 1 + 0.01 k s^2: each step changes the later tokens more.
    inputs = [tokens(1.0, length=9) + 0.01 * torch.arange(9.0)[:, None] * s**2 for s in range(6)]
    config = CacheConfig(fbcache=True, fb_thresh=0.1, fb_metric=metric, fb_downsample=2, fb_last_steps=0)
    manager = CacheManager(config, {"m": FakeDiT()}, ["m"] * 6, [0.0] * 6, log=lambda line: None)
    measure = wan_kernels.rel_l2 if metric == "hidden_rel_l2" else wan_kernels.rel_l1
    marks, metrics, reference = "", [], None
    for step, x in enumerate(inputs):
        first = x * 1.5 + 1
        signal = first - x if metric == "residual_rel_l1" else first
        if reference is not None:  # as before the change: the full-size reference, read at stride 2
            metrics.append(measure(signal, reference, 2).item())
        skipped = _skipped(manager)
        manager.forward(step, "cond", x)
        if _skipped(manager) > skipped:
            marks += "s"
        else:
            marks += "C"
            reference = signal
            # Tokens 0, 2, 4, 6 and 8 of 9.
            assert manager._models["m"].branches["cond"].fb_reference.shape == (1, 5, 2)
    report = manager.finish()["m"]
    assert report["cond"]["mean_metric"]["fbcache"] == sum(metrics) / len(metrics)
    gate = FBCacheGate(0.1, 0.0, Lifecycle(1, 0, 6))
    votes = map(gate.vote, range(6), [False] * 6, [None, *metrics])
    assert marks == "".join("s" if v.skip else "C" for v in votes)
    # The residual [1, 9, 2] and the reference [1, 5, 2], float32.
    assert report["residual_bytes"] == (18 + 10) * 4


def _skipped(manager: CacheManager) -> int:
    return manager.report()["m"].get("cond", {}).get("skipped", 0)


def test_telemetry_counts_match_the_block_calls():
    inputs = [tokens(1.0 + 0.001 * i) for i in range(8)]
    config = CacheConfig(teacache=True, teacache_thresh=0.002, teacache_warmup=2)
    _, report, _, log, models = run(config, inputs, uncond=inputs)
    full_runs = sum(1 for call in models["m"].calls if call == (0, 4))
    cond, uncond = report["m"]["cond"], report["m"]["uncond"]
    assert full_runs == cond["computed"] + uncond["computed"]
    assert cond["steps"] == 8 and cond["computed"] + cond["skipped"] == 8
    assert cond["forced_by"] == {"warmup": 2, "last_steps": 1}
    assert cond["work_saved"] == cond["skipped"] / 8
    assert log[-1].startswith("CacheManager[m] summary: cond steps=8")
    assert report["m"]["residual_bytes"] > 0


def test_poly_plans_the_whole_schedule_before_sampling():
    inputs = [tokens(1.0)] * 5
    config = CacheConfig(teacache=True, teacache_policy="poly", teacache_thresh=BIG)
    manager, report, _, log, _ = run(config, inputs, schedule=["ti2v"] * 5)
    assert log[0].startswith("CacheManager[ti2v] TeaCache plan") and "CsssC" in log[0]
    assert report["ti2v"]["cond"]["skipped"] == 3


def test_poly_plan_after_a_failsafe_follows_from_the_reset(monkeypatch):
    # An identity polynomial and timesteps shrinking by 1/4 a step: every planned change is .25.
    monkeypatch.setitem(FITTED, "m", Policy("poly", "time_embedding", (1.0, 0.0)))
    timesteps = [1024 * 0.75**i for i in range(8)]
    config = CacheConfig(teacache=True, teacache_policy="poly", teacache_thresh=0.6)
    log: list[str] = []
    model = FakeDiT()
    manager = CacheManager(config, {"m": model}, ["m"] * 8, timesteps, log=log.append)
    # acc .25, .5 skip, .75 computes, .25, .5 skip, the last step is forced.
    assert log == ["CacheManager[m] TeaCache plan (poly, C compute, s skip): CssCssCC (4/8 skipped)"]
    # Step 1's tokens are longer than the residual of step 0: a failsafe computes it.
    inputs = [tokens(1.0)] + [tokens(1.0, length=6)] * 7
    with no_host_reads(monkeypatch):
        for step, x in enumerate(inputs):
            manager.forward(step, "cond", x)
    # From step 1 on, as planned from an empty accumulator: .25, .5 skip, .75 computes, ...
    assert log[1] == ("CacheManager[m] TeaCache plan after a forced compute (shape_mismatch) at cond step 1: "
                      "CCssCssC")
    cond = manager.finish()["m"]["cond"]
    assert (cond["computed"], cond["skipped"], cond["failsafes"]) == (4, 4, {"shape_mismatch": 1})
    assert model.calls == [(0, 4)] * 4


@contextlib.contextmanager
def no_host_reads(monkeypatch):
    """Any read of a tensor's value by the host fails (the planned path must take none)."""
    def refuse(*args, **kwargs):
        raise AssertionError("host synchronisation during sampling")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__", "__float__"):
            patch.setattr(torch.Tensor, name, refuse)
        yield


def test_fbcache_nan_metric_is_a_failsafe_that_teacache_cannot_overrule(monkeypatch):
    monkeypatch.setitem(FITTED, "m", Policy("poly", "time_embedding", (1.0, 0.0)))
    # residual_rel_l1: the first block's residual 0.5x + 1 is 0 at x = -2, so step 1 divides by 0.
    inputs = [tokens(-2.0), tokens(1.0), tokens(1.0), tokens(1.0)]
    config = CacheConfig(teacache=True, teacache_policy="poly", teacache_thresh=BIG, teacache_last_steps=0,
                         fbcache=True, fb_thresh=0.0, fb_metric="residual_rel_l1", fb_last_steps=0)
    _, report, _, _, _ = run(config, inputs)
    cond = report["m"]["cond"]
    assert cond["failsafes"] == {"nonfinite_metric": 1}
    assert (cond["computed"], cond["skipped_by"]) == (2, {"teacache": 2})


def test_cached_tensors_follow_their_model():
    config = CacheConfig(teacache=True, teacache_thresh=BIG)
    manager = CacheManager(config, {"m": FakeDiT()}, ["m"] * 2, [1.0, 0.5])
    manager.forward(0, "cond", tokens(1.0))
    manager.move("m", torch.device("meta"))
    state = manager._models["m"].branches["cond"]
    assert state.tea_residual.device.type == "meta" and state.tea_signal.device.type == "meta"


@pytest.mark.parametrize(("alternating", "thresh", "warmup"), [(False, 0.03, 1), (True, 0.1, 2)],
                         ids=["sum", "alternating"])
def test_teacache_counts_a_step_fbcache_skipped_as_skipped(alternating, thresh, warmup):
    """Inputs 1.0, 1.05, 1.06: FBCache skips step 1 (first-block change .03 < .05) and computes
    its last step 2. TeaCache's step 1 was a compute vote (change .05 over .03, or its warmup),
    but nothing computed: its sum runs on to .0595 at step 2, over .03, so step 2 computes; with
    alternating (threshold .1), step 2 follows a skip and computes. Resetting at step 1 would
    have let TeaCache skip step 2 on its own change, .0095."""
    config = CacheConfig(teacache=True, teacache_thresh=thresh, teacache_warmup=warmup, teacache_last_steps=0,
                         teacache_alternating=alternating, fbcache=True, fb_thresh=0.05)
    _, report, _, _, _ = run(config, [tokens(v) for v in (1.0, 1.05, 1.06)])
    assert report["m"]["cond"]["skipped_by"] == {"fbcache": 1}
    assert report["m"]["cond"]["computed"] == 2


def test_planned_teacache_is_replanned_after_an_fbcache_skip(monkeypatch):
    # Every planned change is .25 (see the failsafe test): alone, TeaCache plans CssCssCC at .6.
    monkeypatch.setitem(FITTED, "m", Policy("poly", "time_embedding", (1.0, 0.0)))
    config = CacheConfig(teacache=True, teacache_policy="poly", teacache_thresh=0.6, fbcache=True,
                         fb_thresh=0.05, fb_warmup=3, fb_last_steps=0)
    # FBCache: warmup over steps 0-2, then the first block barely changes: it skips step 3 on.
    inputs = [tokens(1.0 + 0.001 * i) for i in range(8)]
    _, report, _, log, _ = run(config, inputs, timesteps=[1024 * 0.75**i for i in range(8)])
    # Step 3, planned C, is FBCache's skip: TeaCache's sum runs on (1.0 at step 4, no skip), and
    # the re-plan computes step 4 instead of skipping it... which FBCache skips anyway.
    assert log[1].endswith("TeaCache plan (poly, C compute, s skip): CssCssCC (4/8 skipped)")
    assert log[2] == "CacheManager[m] TeaCache plan after an FBCache skip at cond step 3: CssCCssC"
    assert report["m"]["cond"]["skipped_by"] == {"teacache": 2, "fbcache": 5}


@pytest.mark.parametrize("config", [
    CacheConfig(fbcache=True, fb_thresh=0.01, fb_last_steps=0),
    CacheConfig(teacache=True, teacache_thresh=0.01, teacache_last_steps=0),
], ids=["fbcache", "teacache"])
def test_decisions_use_the_metric_as_reduced_across_ranks(config, monkeypatch):
    """Every metric passes through ``agreed_metric`` (what all ranks of a multi-rank run agree
    on) and the decision is taken on what it returns: here an agreement that reads 0 makes every
    step after the warmup skip, though each rank's own change is far over the threshold."""
    seen = []

    def agreed_zero(squared, current, reference, shared, shard):
        metric = (wan_kernels.rel_l2 if squared else wan_kernels.rel_l1)(current, reference)
        seen.append(float(metric))
        return torch.zeros_like(metric)

    monkeypatch.setattr("wan_runtime.cache.manager.agreed_metric", agreed_zero)
    inputs = [tokens(v) for v in (1.0, 2.0, 4.0, 8.0)]
    _, report, _, _, _ = run(config, inputs, uncond=[tokens(3 * v) for v in (1.0, 2.0, 4.0, 8.0)])
    assert report["m"]["cond"]["skipped"] == 3 and report["m"]["uncond"]["skipped"] == 3
    assert len(seen) >= 3 and min(seen) > 0.1


def test_a_compute_either_gate_forced_counts_as_forced():
    """TeaCache forces its last step; FBCache (no last steps) computes it on its metric: the
    compute is counted as forced by last_steps, not as a metric decision."""
    config = CacheConfig(teacache=True, teacache_thresh=BIG, teacache_last_steps=1, fbcache=True,
                         fb_thresh=0.0, fb_last_steps=0)
    _, report, _, _, _ = run(config, [tokens(v) for v in (1.0, 1.1, 1.2, 1.3)])
    cond = report["m"]["cond"]
    assert cond["forced_by"] == {"warmup": 1, "last_steps": 1}
    assert cond["skipped_by"] == {"teacache": 2}


def test_uncond_keeps_its_own_failsafe_when_fbcache_skips_a_step_teacache_forced():
    """TeaCache's warmup forces steps 1-2, FBCache skips them: a skip, so the uncond branch still
    measures its own first-block change and its NaN is a failsafe (the forced reason is a
    compute's only); step 2 then measures against step 1's NaN reference, a second failsafe, as
    with FBCache alone."""
    config = CacheConfig(fbcache=True, fb_thresh=0.5, fb_last_steps=0, teacache=True, teacache_warmup=3,
                         teacache_last_steps=0)
    cond = [tokens(1.0)] * 3
    uncond = [tokens(1.0), tokens(float("nan")), tokens(1.0)]
    _, report, _, _, _ = run(config, cond, uncond=uncond)
    assert report["m"]["cond"]["skipped_by"] == {"fbcache": 2}
    assert report["m"]["uncond"]["failsafes"] == {"nonfinite_metric": 2}
