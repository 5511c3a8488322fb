"""The skip rules on synthetic metric sequences, each expected decision worked out by hand."""

from __future__ import annotations

import math

import pytest

from wan_runtime.cache.gate import (
    ALTERNATING,
    COLD,
    EXPERT_SWITCH,
    LAST_STEPS,
    METRIC,
    NONFINITE,
    SHAPE,
    WARMUP,
    FBCacheGate,
    Lifecycle,
    TeaCacheGate,
    TeaCachePlan,
)
from wan_runtime.cache.policies import FITTED, LINEAR


def tea_votes(changes, threshold=0.1, warmup=1, last=1, alternating=False, switch_at=(), other_skips=()):
    """TeaCache alone decides, except at ``other_skips``, where another gate skips the step."""
    gate = TeaCacheGate(LINEAR, threshold, Lifecycle(warmup, last, len(changes)), alternating)
    votes = []
    for i, change in enumerate(changes):
        votes.append(gate.vote(i, i in switch_at, change))
        gate.settle(votes[-1].skip or i in other_skips)
    return votes


def marks(votes):
    return "".join("s" if v.skip else "C" for v in votes)


def test_teacache_accumulates_until_the_threshold_then_resets():
    # acc: -, .04, .08, .12>=.1 compute (reset), .04, .08, last step forced.
    votes = tea_votes([None, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04])
    assert marks(votes) == "CssCssC"
    assert [v.reason for v in votes] == [WARMUP, METRIC, METRIC, METRIC, METRIC, METRIC, LAST_STEPS]
    compared = [None if v.metric is None else round(v.metric, 6) for v in votes]
    assert compared == [None, 0.04, 0.08, 0.12, 0.04, 0.08, None]


def test_threshold_zero_never_skips_and_the_comparison_is_strict():
    assert marks(tea_votes([None, 0.0, 0.0, 0.0], threshold=0.0, warmup=0, last=0)) == "CCCC"
    # 0.05 + 0.05 == 0.1 is not under 0.1: computes.
    assert marks(tea_votes([None, 0.05, 0.05, 0.05], threshold=0.1, warmup=0, last=0)) == "CsCs"


def test_warmup_and_last_steps_force_compute():
    votes = tea_votes([0.0] * 8, threshold=1.0, warmup=3, last=2)
    assert marks(votes) == "CCCsssCC"
    assert [v.reason for v in votes[:3]] == [WARMUP] * 3 and [v.reason for v in votes[6:]] == [LAST_STEPS] * 2


def test_alternating_never_skips_twice_in_a_row():
    votes = tea_votes([None] + [0.0] * 6, threshold=1.0, warmup=1, last=0, alternating=True)
    assert marks(votes) == "CsCsCsC"
    assert votes[2].reason == ALTERNATING


def test_cold_start_and_nonfinite_change_compute_and_reset():
    votes = tea_votes([None, 0.05, math.nan, 0.05, 0.05], threshold=0.1, warmup=0, last=0)
    # The NaN resets the accumulator: .05 skips, .05 + .05 is not under .1.
    assert marks(votes) == "CsCsC"
    assert [votes[0].reason, votes[2].reason] == [COLD, NONFINITE]
    assert [round(v.metric, 6) for v in votes[3:]] == [0.05, 0.1]


def test_expert_switch_is_named_before_warmup():
    life = Lifecycle(warmup=1, last_steps=1, total=4)
    assert [life.forced(i, i == 0) for i in range(4)] == [EXPERT_SWITCH, None, None, LAST_STEPS]
    life = Lifecycle(warmup=0, last_steps=0, total=4)
    assert [life.forced(i, i == 2) for i in range(4)] == [None, None, EXPERT_SWITCH, None]


def test_poly_rescale_is_clamped_at_zero():
    poly = FITTED["ti2v"]
    assert poly.rescale(0.0) == 0.0  # the constant term is negative
    x = 0.1
    expected = sum(c * x ** (len(poly.coefficients) - 1 - i) for i, c in enumerate(poly.coefficients))
    assert math.isclose(poly.rescale(x), max(expected, 0.0), rel_tol=1e-12)


def tea_plan(changes, threshold=0.6):
    gate = TeaCacheGate(LINEAR, threshold, Lifecycle(1, 1, len(changes)), False)
    return TeaCachePlan(gate, [(i, False) for i in range(len(changes))], changes)


def test_plan_after_a_forced_compute_starts_from_an_empty_accumulator():
    # acc: -, .25, .5, .75>=.6 compute, .25, .5, .75 compute, last step forced.
    plan = tea_plan([None] + [0.25] * 7)
    assert plan.marks() == "CssCssCC"
    # A failsafe computes step 1: from there .25 (step 2), .5, .75 computes, .25, .5, last.
    assert plan.restart(1, SHAPE)
    assert plan.marks() == "CCssCssC"
    assert plan[1].reason == SHAPE
    assert [round(v.metric, 6) for v in plan.votes[2:7]] == [0.25, 0.5, 0.75, 0.25, 0.5]
    # A failsafe on a step the plan computes anyway changes nothing after it.
    assert not plan.restart(4, NONFINITE)
    assert plan.marks() == "CCssCssC"


def test_plan_restart_follows_the_alternating_rule_from_the_reset():
    gate = TeaCacheGate(LINEAR, 1.0, Lifecycle(1, 0, 6), alternating=True)
    plan = TeaCachePlan(gate, [(i, False) for i in range(6)], [None] + [0.0] * 5)
    assert plan.marks() == "CsCsCs"
    # Computed at step 1 (was a skip): step 2 may skip again, then alternate.
    plan.restart(1, SHAPE)
    assert plan.marks() == "CCsCsC"


def fb_votes(metrics, threshold=0.1, ema=0.0, warmup=1, last=1):
    gate = FBCacheGate(threshold, ema, Lifecycle(warmup, last, len(metrics)))
    return [gate.vote(i, False, m) for i, m in enumerate(metrics)]


def test_fbcache_compares_each_step_without_accumulating():
    votes = fb_votes([None, 0.05, 0.09, 0.2, 0.05, 0.05])
    assert marks(votes) == "CssCsC"


def test_fbcache_ema_smooths_the_metric():
    # ema 0.5: 0.05, then .5*.05+.5*.25=.15 (compute), then .5*.15+.5*.01=.08 (skip).
    votes = fb_votes([None, 0.05, 0.25, 0.01, 0.0], ema=0.5, warmup=1, last=0)
    assert marks(votes) == "CsCss"
    assert [round(v.metric, 6) for v in votes[1:4]] == [0.05, 0.15, 0.08]


def test_fbcache_nonfinite_metric_computes_and_forgets_the_ema():
    votes = fb_votes([None, 0.3, math.inf, 0.05], ema=0.5, warmup=1, last=0)
    assert marks(votes) == "CCCs"
    assert votes[2].reason == NONFINITE and votes[3].metric == 0.05


def test_a_step_another_gate_skips_keeps_the_accumulated_change():
    # TeaCache alone: step 1 at .06 skips, step 2 at .12 computes (reset), steps 3 and 4 at .06
    # skip. With step 2 skipped by FBCache nothing has computed since step 0: the sum goes on, .18
    # at step 3, which must compute.
    alone = tea_votes([None, 0.06, 0.06, 0.06, 0.0], warmup=1, last=0)
    assert marks(alone) == "CsCss"
    shared = tea_votes([None, 0.06, 0.06, 0.06, 0.0], warmup=1, last=0, other_skips={2})
    assert marks(shared) == "CsCCs"
    assert shared[3].metric == pytest.approx(0.18)


def test_alternating_counts_a_skip_of_another_gate():
    # Step 1 skipped by FBCache although TeaCache voted compute (warmup 2): step 2 must compute.
    votes = tea_votes([None, 0.0, 0.0, 0.0], threshold=1.0, warmup=2, last=0, alternating=True,
                      other_skips={1})
    assert marks(votes) == "CCCs" and votes[2].reason == ALTERNATING


def test_plan_follows_a_step_another_gate_skipped():
    gate = TeaCacheGate(LINEAR, 0.1, Lifecycle(1, 0, 5), alternating=False)
    plan = TeaCachePlan(gate, [(i, False) for i in range(5)], [None, 0.06, 0.06, 0.06, 0.0])
    assert plan.marks() == "CsCss"
    assert plan.skipped_by_other(2)
    assert plan.marks() == "CsCCs" and plan[3].metric == pytest.approx(0.18)
    assert plan.restart(3, SHAPE) is False and plan.marks() == "CsCCs"


def test_a_replan_that_moves_only_the_metrics_is_no_change():
    """An FBCache skip of a step the plan computes keeps its change in the accumulator: the later
    votes' metrics grow, but where no decision flips the plan is told unchanged (not logged)."""
    gate = TeaCacheGate(LINEAR, 0.5, Lifecycle(1, 0, 5), alternating=False)
    plan = TeaCachePlan(gate, [(i, False) for i in range(5)], [None, 0.6, 0.6, 0.6, 0.6])
    assert plan.marks() == "CCCCC"
    before = [vote.metric for vote in plan.votes]
    assert plan.skipped_by_other(1) is False and plan.marks() == "CCCCC"
    assert [vote.metric for vote in plan.votes] != before
