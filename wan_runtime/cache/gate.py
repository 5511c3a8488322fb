"""The skip decisions of TeaCache and FBCache, on host-side numbers only.

Each gate sees one model's cond steps in order and votes skip or compute. Nothing here touches a
tensor, so every rule can be tested on synthetic metric sequences and a TeaCache schedule can be
planned before sampling. A threshold is compared strictly (``value < threshold`` skips) against
non-negative values, so a threshold of 0 never skips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from wan_runtime.cache.policies import Policy

# Why a step computes without consulting the metric (counted as "forced" in the telemetry).
EXPERT_SWITCH, WARMUP, LAST_STEPS, ALTERNATING, COLD = (
    "expert_switch", "warmup", "last_steps", "alternating", "cold",
)
FORCED_REASONS = (EXPERT_SWITCH, WARMUP, LAST_STEPS, ALTERNATING, COLD)
# Why a step computes although a gate voted to skip (counted as "failsafes").
SHAPE, DTYPE, NONFINITE = "shape_mismatch", "dtype_mismatch", "nonfinite_metric"
FAILSAFES = (SHAPE, DTYPE, NONFINITE)
# A compute decided by the metric itself.
METRIC = "metric"


class Vote(NamedTuple):
    """A gate's vote for one step: ``reason`` is ``METRIC`` or a forced or failsafe reason;
    ``metric`` the value compared (the accumulator or the smoothed metric), if any."""

    skip: bool
    reason: str
    metric: float | None = None


@dataclass(frozen=True)
class Lifecycle:
    """Warmup, main and last-steps phases of one model's ``total`` cond steps."""

    warmup: int
    last_steps: int
    total: int

    def forced(self, index: int, switch: bool) -> str | None:
        """The forced reason of the model's ``index``-th cond step (0-based), or None in the main
        phase. ``switch``: the previous step ran another expert. The switch is named first, so a
        MoE run reports its expert switches even where warmup would also force them."""
        if switch:
            return EXPERT_SWITCH
        if index < self.warmup:
            return WARMUP
        if index >= self.total - self.last_steps:
            return LAST_STEPS
        return None


class TeaCacheGate:
    """TeaCache's accumulate-and-reset rule for one model's cond steps.

    ``change`` is the relative L1 change of the policy's signal since the previous cond step
    (skipped or not: TeaCache updates its reference every step), or None without one. The
    rescaled change accumulates; the step skips while the sum stays under ``threshold``, and a
    compute resets it. With ``alternating`` a skip is never followed by a skip.

    ``vote`` only proposes: the step's outcome may be another gate's (FBCache skipping a step
    TeaCache would compute), so ``settle`` then records what happened, and the accumulator is
    reset by a compute only, as the rule says.
    """

    def __init__(self, policy: Policy, threshold: float, lifecycle: Lifecycle, alternating: bool) -> None:
        self.policy = policy
        self.threshold = threshold
        self.lifecycle = lifecycle
        self.alternating = alternating
        self.accumulated = 0.0
        self._skipped_last = False
        self._pending = 0.0  # the accumulator should the step voted on be skipped

    def forced(self, index: int, switch: bool) -> str | None:
        """The lifecycle's forced reason."""
        return self.lifecycle.forced(index, switch)

    def vote(self, index: int, switch: bool, change: float | None) -> Vote:
        """The vote for the model's ``index``-th cond step; ``settle`` must follow."""
        finite = change is not None and math.isfinite(change)
        self._pending = self.accumulated + (self.policy.rescale(change) if finite else 0.0)
        reason = self.forced(index, switch) or (COLD if change is None else None)
        if reason is None and not finite:
            reason = NONFINITE
        if reason is not None:
            return Vote(False, reason)
        value = self._pending
        if value < self.threshold and not (self.alternating and self._skipped_last):
            return Vote(True, METRIC, value)
        return Vote(False, METRIC if value >= self.threshold else ALTERNATING, value)

    def settle(self, skipped: bool) -> None:
        """The outcome of the step last voted on: a skip (by any gate) keeps the accumulated
        change, a compute resets it."""
        if skipped:
            self.accumulated, self._skipped_last = self._pending, True
        else:
            self.reset()

    def reset(self) -> None:
        """Back to an empty accumulator (after a compute or a failsafe)."""
        self.accumulated = 0.0
        self._skipped_last = False


class TeaCachePlan:
    """Every vote of a ``TeaCacheGate`` over one model's cond steps, decided before sampling from
    changes known up front (a signal of the timesteps alone).

    ``steps`` holds each cond step's ``(index, switch)`` and ``changes`` its change (None for the
    first). During sampling a step may end otherwise than planned: a failsafe computes it, or
    another gate skips a step the plan computes. The gate's later votes did not see that outcome,
    so ``restart`` and ``skipped_by_other`` re-plan them (host arithmetic only).
    """

    def __init__(
        self, gate: TeaCacheGate, steps: list[tuple[int, bool]], changes: list[float | None]
    ) -> None:
        self.gate = gate
        self.steps = steps
        self.changes = changes
        self._computed: dict[int, str] = {}  # step -> failsafe reason
        self._skipped: set[int] = set()
        self.votes = self._plan()

    def __getitem__(self, index: int) -> Vote:
        return self.votes[index]

    def restart(self, index: int, reason: str) -> bool:
        """Step ``index`` computed for ``reason`` (a failsafe) whatever the plan said. Returns
        whether a later step's decision changed."""
        self._computed[index] = reason
        return self._replan(index)

    def skipped_by_other(self, index: int) -> bool:
        """Step ``index``, which the plan computes, was skipped by another gate: its change stays
        in the accumulator. Returns whether a later step's decision changed."""
        self._skipped.add(index)
        return self._replan(index)

    def marks(self) -> str:
        """One letter a step: ``C`` compute, ``s`` skip."""
        return "".join("s" if vote.skip else "C" for vote in self.votes)

    def _replan(self, index: int) -> bool:
        # The votes' metrics change with the accumulator whenever an outcome differs; their
        # decisions, which the log reports, may not.
        before = self.marks()[index + 1:]
        self.votes = self._plan()
        return self.marks()[index + 1:] != before

    def _plan(self) -> list[Vote]:
        """The votes from the first step, with the outcomes known so far."""
        self.gate.reset()
        votes = []
        for i, ((index, switch), change) in enumerate(zip(self.steps, self.changes, strict=True)):
            vote = self.gate.vote(index, switch, change)
            if i in self._computed:
                vote = Vote(False, self._computed[i])
            votes.append(vote)
            self.gate.settle(i not in self._computed and (vote.skip or i in self._skipped))
        return votes


class FBCacheGate:
    """FBCache's rule for one model's cond steps: skip while the (EMA-smoothed) first-block
    change since the last computed step is under ``threshold``. ``ema`` is the weight of the
    previous smoothed value (0: no smoothing)."""

    def __init__(self, threshold: float, ema: float, lifecycle: Lifecycle) -> None:
        self.threshold = threshold
        self.ema = ema
        self.lifecycle = lifecycle
        self.smoothed: float | None = None

    def forced(self, index: int, switch: bool, has_reference: bool) -> str | None:
        """Why the step must compute without a metric, or None if the metric decides."""
        return self.lifecycle.forced(index, switch) or (None if has_reference else COLD)

    def vote(self, index: int, switch: bool, metric: float | None) -> Vote:
        """The vote for the model's ``index``-th cond step; ``metric`` None: no reference yet."""
        reason = self.forced(index, switch, metric is not None)
        if reason is not None:
            return Vote(False, reason)
        if not math.isfinite(metric):
            self.reset()
            return Vote(False, NONFINITE)
        # The EMA spans computes: it smooths the rate of change, which a compute does not reset.
        if self.smoothed is None or self.ema == 0:
            self.smoothed = metric
        else:
            self.smoothed = self.ema * self.smoothed + (1 - self.ema) * metric
        return Vote(self.smoothed < self.threshold, METRIC, self.smoothed)

    def reset(self) -> None:
        """Forget the smoothed metric (after a failsafe)."""
        self.smoothed = None
