"""``CacheManager``: one run's step cache over one or more models (experts) and their branches.

The manager knows models only by name and forwards only by branch. Per step, the ``"cond"``
branch decides: FBCache's vote first, then TeaCache's, the first skip winning; otherwise every
block runs. Every other branch of the step (``"uncond"``) takes that decision with its own
cached residual. Each model keeps its own gates, residuals and counters, and the first step after
an expert switch always computes. A computed step runs exactly the model's forward arithmetic and
never reads cached data.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

import wan_kernels
from wan_runtime.cache.config import CacheConfig
from wan_runtime.cache.distributed import agreed_metric
from wan_runtime.cache.gate import (
    COLD,
    DTYPE,
    FAILSAFES,
    FORCED_REASONS,
    NONFINITE,
    SHAPE,
    FBCacheGate,
    Lifecycle,
    TeaCacheGate,
    TeaCachePlan,
    Vote,
)
from wan_runtime.cache.policies import policy_for
from wan_runtime.cache.stages import CachedModel
from wan_runtime.cache.state import BranchState
from wan_runtime.cache.telemetry import BranchStats, summary_lines
from wan_runtime.distributed.ulysses import SequenceShard

COND = "cond"
FBCACHE, TEACACHE = "fbcache", "teacache"


class _Decision(NamedTuple):
    """The cond branch's decision for a step: the gate whose skip won (None: compute) and the
    reason of a compute."""

    gate: str | None
    reason: str


class _Model:
    """Everything the manager keeps for one model."""

    def __init__(self, name: str, stages: CachedModel, config: CacheConfig, total: int) -> None:
        self.name = name
        self.stages = stages
        self.fb: FBCacheGate | None = None
        self.tea: TeaCacheGate | None = None
        self.plan: TeaCachePlan | None = None
        if config.fbcache:
            self.fb = FBCacheGate(
                config.fb_thresh, config.fb_ema, Lifecycle(config.fb_warmup, config.fb_last_steps, total)
            )
        if config.teacache:
            policy = policy_for(config.teacache_policy, name)
            lifecycle = Lifecycle(config.teacache_warmup, config.teacache_last_steps, total)
            self.tea = TeaCacheGate(policy, config.teacache_thresh, lifecycle, config.teacache_alternating)
        self.branches: dict[str, BranchState] = {}
        self.stats: dict[str, BranchStats] = {}
        self.peak_bytes = 0

    def branch(self, name: str) -> tuple[BranchState, BranchStats]:
        if name not in self.branches:
            self.branches[name] = BranchState()
            self.stats[name] = BranchStats(self.stages.num_blocks)
        return self.branches[name], self.stats[name]

    def residual_bytes(self) -> int:
        return sum(state.nbytes() for state in self.branches.values())

    def release(self) -> None:
        """Drop every cached tensor of the model's branches."""
        for state in self.branches.values():
            state.clear()


class CacheManager:
    """The step cache of one sampling run.

    ``models`` maps each model name to its ``CachedModel``; ``schedule`` names the model of every
    step and ``timesteps`` its timestep value. Call ``forward(step, branch, *inputs)`` in place
    of the model's forward, the ``"cond"`` branch first in each step, then ``finish()`` for the
    telemetry. ``log`` receives the notices, the planned schedule and the summary lines;
    ``notice=False`` leaves out the notice about the configuration, for a run that makes one
    manager per video clip and gave it with the first. ``shared``: the run is one of a process
    group's, whose ranks must all decide alike (``agreed_metric``).
    """

    def __init__(
        self,
        config: CacheConfig,
        models: Mapping[str, CachedModel],
        schedule: Sequence[str],
        timesteps: Sequence[float],
        log: Callable[[str], None] = print,
        notice: bool = True,
        shared: bool = False,
    ) -> None:
        self.config = config
        self.shared = shared
        self.schedule = list(schedule)
        self.log = log
        totals = Counter(self.schedule)
        self._models = {name: _Model(name, models[name], config, totals[name]) for name in totals}
        # Per step: the index among its model's steps, and whether the previous step ran another model.
        seen: Counter = Counter()
        self._position: list[tuple[int, bool]] = []
        for i, name in enumerate(self.schedule):
            self._position.append((seen[name], i > 0 and self.schedule[i - 1] != name))
            seen[name] += 1
        self._last_step = {name: i for i, name in enumerate(self.schedule)}
        self._decisions: dict[int, _Decision] = {}
        self._shard: SequenceShard | None = None  # the current forward's, set by ``forward``
        if notice and config.fbcache and config.teacache:
            log("CacheManager: FBCache and TeaCache are both on; FBCache takes precedence "
                "(a TeaCache skip applies only where FBCache computes)")
        if notice:
            self._warn_of_unskippable_models()
        for model in self._models.values():
            if model.tea is not None and model.tea.policy.planned:
                self._plan_teacache(model, [t for t, n in zip(timesteps, self.schedule, strict=True)
                                            if n == model.name])

    def _warn_of_unskippable_models(self) -> None:
        """A cache that cannot skip a step of a model (each forced: warmup, last steps, the expert
        switch) costs its gates for nothing there; say so before the run."""
        for model in self._models.values():
            positions = [at for at, name in zip(self._position, self.schedule, strict=True)
                         if name == model.name]
            gates = {name: gate for name, gate in (("FBCache", model.fb), ("TeaCache", model.tea)) if gate}
            if any(gate.lifecycle.forced(*at) is None for gate in gates.values() for at in positions):
                continue
            phases = [f"{name}'s warmup {gate.lifecycle.warmup} and last_steps {gate.lifecycle.last_steps}"
                      for name, gate in gates.items()]
            if any(switch for _, switch in positions):
                phases.append("the switch of experts")
            steps = f"{len(positions)} step{'s' * (len(positions) > 1)}"
            warnings.warn(f"the step cache cannot skip any step of model {model.name!r} ({steps}): each is "
                          f"forced ({'; '.join(phases)}); give more sampling steps, or lower the cache's "
                          "warmup or last_steps", stacklevel=3)

    def _plan_teacache(self, model: _Model, timesteps: list[float]) -> None:
        """Decide every TeaCache vote of ``model`` now: its signal depends on the timesteps only,
        so sampling then takes no host synchronisation for TeaCache."""
        signals = [model.stages.time_signal(t) for t in timesteps]
        changes: list[float | None] = [None]
        if len(signals) > 1:  # one host read for the whole schedule
            pairs = zip(signals[1:], signals[:-1], strict=True)
            changes += torch.stack([wan_kernels.rel_l1(a, b) for a, b in pairs]).tolist()
        steps = [p for p, n in zip(self._position, self.schedule, strict=True) if n == model.name]
        model.plan = TeaCachePlan(model.tea, steps, changes)
        marks = model.plan.marks()
        self.log(f"CacheManager[{model.name}] TeaCache plan ({model.tea.policy.name}, "
                 f"C compute, s skip): {marks} ({marks.count('s')}/{len(marks)} skipped)")

    # -- forwards --------------------------------------------------------------------------------

    def forward(self, step: int, branch: str, *inputs: Any) -> torch.Tensor:
        """The model output of ``branch`` at ``step`` for the model's forward ``inputs``."""
        model = self._models[self.schedule[step]]
        if self._position[step][1]:
            self.release_finished(step)
        state, stats = model.branch(branch)
        stages = model.stages
        tokens, cond = stages.prepare(*inputs)
        # Under sequence parallelism the tokens are this rank's slice; the gates measure the whole
        # sequence (``_measured``, ``agreed_metric``).
        self._shard = stages.sequence_shard(cond)
        # FBCache needs the first block's output whatever it decides: to measure, to add the
        # cached residual to, or as the input of the remaining blocks.
        first = None if model.fb is None else stages.run_blocks(tokens, cond, 0, 1)
        if branch == COND:
            decision = self._decide(step, model, state, stats, tokens, cond, first)
        elif step in self._decisions:
            decision = self._follow(model, state, stats, tokens, first, self._decisions[step])
        else:
            raise RuntimeError(f"step {step}: the {COND!r} branch must run before {branch!r}")
        gate, reason = decision
        base = tokens if gate == TEACACHE else first
        failsafe = None if gate is None else self._failsafe(state, gate, base)
        if failsafe is not None:
            gate, reason = None, failsafe
            if branch == COND:
                self._reset_gates(model, self._position[step][0], failsafe)
        if branch == COND:
            self._decisions[step] = _Decision(gate, reason)

        if gate is not None:
            residual = state.fb_residual if gate == FBCACHE else state.tea_residual
            out = wan_kernels.residual_apply(base, residual)
            # Block 0 ran anyway where FBCache is on, whichever gate skipped.
            saved = stages.num_blocks - (0 if first is None else 1)
        else:
            out = stages.run_blocks(tokens, cond) if first is None else stages.run_blocks(first, cond, 1)
            self._capture(model, state, tokens, first, out)
            saved = 0
        stats.record(gate, reason, saved)
        model.peak_bytes = max(model.peak_bytes, model.residual_bytes())
        return stages.finish(out, cond)

    def release_finished(self, step: int) -> None:
        """Free the cached tensors of the models whose steps all came before ``step`` (i2v-A14B's
        high-noise expert once the low-noise one takes over): they are never read again, and
        would hold device memory through the other model's steps. ``forward`` calls it at a
        switch of models; a caller that moves the tensors first calls it before."""
        for name, last in self._last_step.items():
            if last < step:
                self._models[name].release()

    def forget(self, name: str, branch: str, signal_only: bool = False) -> None:
        """Drop the cached tensors of model ``name``'s ``branch``, as its next capture would (with
        ``signal_only`` TeaCache's signal alone, as its next vote does, before the blocks run)."""
        state = self._models[name].branches[branch]
        if signal_only:
            state.tea_signal = None
        else:
            state.clear()

    def _decide(
        self,
        step: int,
        model: _Model,
        state: BranchState,
        stats: BranchStats,
        tokens: torch.Tensor,
        cond: Any,
        first: torch.Tensor | None,
    ) -> _Decision:
        index, switch = self._position[step]
        votes: list[tuple[str, Vote]] = []
        if model.fb is not None:
            mismatch = _mismatch(state.fb_base, first)
            if mismatch is not None:
                votes.append((FBCACHE, Vote(False, mismatch)))
            else:
                forced = model.fb.forced(index, switch, state.fb_reference is not None)
                metric = None if forced else self._fb_metric(first, tokens, state.fb_reference)
                votes.append((FBCACHE, model.fb.vote(index, switch, metric)))
        if model.tea is not None:
            votes.append((TEACACHE, self._tea_vote(model, state, index, switch, tokens, cond)))
        for gate, vote in votes:
            stats.add_metric(gate, vote.metric)
        # A failsafe of either gate forces the compute (no other gate's skip may win) and resets both.
        failsafe = next((vote.reason for _, vote in votes if vote.reason in FAILSAFES), None)
        if failsafe is not None:
            self._reset_gates(model, index, failsafe)
            return _Decision(None, failsafe)
        winner = next((gate for gate, vote in votes if vote.skip), None)
        if model.tea is not None:
            self._settle_teacache(model, index, skipped=winner is not None)
        reason = votes[0][1].reason
        if winner is None:  # a compute is counted as forced when either gate forced it
            reason = next((vote.reason for _, vote in votes if vote.reason in FORCED_REASONS), reason)
        return _Decision(winner, reason)

    def _settle_teacache(self, model: _Model, index: int, skipped: bool) -> None:
        """Tell TeaCache how its ``index``-th cond step ended, which FBCache may have decided."""
        if model.plan is None:
            model.tea.settle(skipped)
        elif skipped and not model.plan[index].skip and model.plan.skipped_by_other(index):
            self._log_replan(model, "an FBCache skip", index)

    def _log_replan(self, model: _Model, after: str, index: int) -> None:
        self.log(f"CacheManager[{model.name}] TeaCache plan after {after} at cond step {index}: "
                 f"{model.plan.marks()}")

    def _tea_vote(
        self, model: _Model, state: BranchState, index: int, switch: bool, tokens: torch.Tensor, cond: Any
    ) -> Vote:
        if model.plan is not None:
            return model.plan[index]
        signal = self._measured(model.stages.modulated_input(tokens, cond))
        previous, state.tea_signal = state.tea_signal, signal
        mismatch = None if previous is None else _mismatch((previous.shape, previous.dtype), signal)
        if mismatch is not None:
            return Vote(False, mismatch)
        # A forced step's change matters only if FBCache may skip that step: then it accumulates.
        change = None
        if previous is not None and (model.fb is not None or model.tea.forced(index, switch) is None):
            change = agreed_metric(False, signal, previous, self.shared, self._shard).item()
        return model.tea.vote(index, switch, change)

    def _follow(
        self,
        model: _Model,
        state: BranchState,
        stats: BranchStats,
        tokens: torch.Tensor,
        first: torch.Tensor | None,
        decision: _Decision,
    ) -> _Decision:
        """A non-cond branch: the cond decision, unless its own FBCache measurement is not finite."""
        measure = self.config.fb_cfg_sep_diff and model.fb is not None and state.fb_reference is not None
        if measure and decision.reason not in FORCED_REASONS:
            mismatch = _mismatch(state.fb_base, first)
            if mismatch is not None:
                return _Decision(None, mismatch)
            metric = self._fb_metric(first, tokens, state.fb_reference)
            if not math.isfinite(metric):
                return _Decision(None, NONFINITE)
            stats.add_metric(FBCACHE, metric)
        return decision

    def _fb_metric(self, first: torch.Tensor, tokens: torch.Tensor, reference: torch.Tensor) -> float:
        """The FBCache metric against the last computed step's reference, one host read."""
        current = self._fb_signal(first, tokens)
        squared = self.config.fb_metric == "hidden_rel_l2"
        return agreed_metric(squared, current, reference, self.shared, self._shard).item()

    def _fb_signal(self, first: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """What FBCache compares, at every ``fb_downsample``-th token only (a view)."""
        stride = self.config.fb_downsample
        if self.config.fb_metric == "residual_rel_l1":
            # Only the sampled tokens' residual: the others would be computed to be ignored.
            return wan_kernels.residual_capture(self._measured(first, stride), self._measured(tokens, stride))
        return self._measured(first, stride)

    def _measured(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """The tokens of ``x`` a gate measures (a view): every ``stride``-th of the sequence, of
        this rank's real tokens under sequence parallelism."""
        return x[..., ::stride, :] if self._shard is None else self._shard.real_rows(x, stride)

    @staticmethod
    def _failsafe(state: BranchState, gate: str, base: torch.Tensor) -> str | None:
        """Why the cached residual of ``gate`` cannot be added to ``base``, or None if it can."""
        captured = state.fb_base if gate == FBCACHE else state.tea_base
        return COLD if captured is None else _mismatch(captured, base)

    def _reset_gates(self, model: _Model, index: int, reason: str) -> None:
        """Empty both gates' accumulators after a failsafe (``reason``) forced the model's
        ``index``-th cond step to compute; a planned TeaCache schedule is re-planned from there
        (host arithmetic on the planned changes: still no host synchronisation)."""
        if model.fb is not None:
            model.fb.reset()
        if model.plan is not None:
            if model.plan.restart(index, reason):
                self._log_replan(model, f"a forced compute ({reason})", index)
        elif model.tea is not None:
            model.tea.reset()

    def _capture(
        self,
        model: _Model,
        state: BranchState,
        tokens: torch.Tensor,
        first: torch.Tensor | None,
        out: torch.Tensor,
    ) -> None:
        """Store the residuals of a computed step (after the output exists, so it is never read)."""
        if model.tea is not None:
            state.tea_residual = wan_kernels.residual_capture(out, tokens)
            state.tea_base = (tokens.shape, tokens.dtype)
        if model.fb is not None:
            state.fb_residual = wan_kernels.residual_capture(out, first)
            state.fb_base = (first.shape, first.dtype)
            # A copy of the sampled tokens, so the full-size tensor is not kept alive by a view.
            state.fb_reference = self._fb_signal(first, tokens).contiguous()

    # -- placement and results -------------------------------------------------------------------

    def move(self, name: str, device: torch.device) -> None:
        """Move model ``name``'s cached tensors to ``device``, following the model when offloaded
        (a model the schedule never runs, as an expert given no step, holds none)."""
        model = self._models.get(name)
        for state in () if model is None else model.branches.values():
            state.to(device)

    def residual_bytes(self) -> dict[str, int]:
        """Peak bytes of cached tensors held per model during the run."""
        return {name: model.peak_bytes for name, model in self._models.items()}

    def report(self) -> dict[str, dict[str, Any]]:
        """Per model: per branch the ``BranchStats.as_dict`` numbers, and ``residual_bytes``."""
        return {
            name: {**{b: s.as_dict() for b, s in model.stats.items()}, "residual_bytes": model.peak_bytes}
            for name, model in self._models.items()
        }

    def finish(self, summary: bool = True) -> dict[str, dict[str, Any]]:
        """Log one summary line per model (unless not ``summary``: a caller that merges several
        runs' reports logs theirs), free the cached tensors, and return ``report()``."""
        report = self.report()
        if summary:
            for line in summary_lines(report):
                self.log(line)
        for model in self._models.values():
            model.release()
        return report


def _mismatch(captured: tuple[torch.Size, torch.dtype] | None, current: torch.Tensor) -> str | None:
    """``SHAPE`` or ``DTYPE`` when ``current`` is not of the captured kind (None: nothing captured)."""
    if captured is None:
        return None
    if captured[0] != current.shape:
        return SHAPE
    if captured[1] != current.dtype:
        return DTYPE
    return None
