"""What the step cache did, per model and branch: counts, reasons, metrics and the work saved."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wan_runtime.cache.gate import FAILSAFES, FORCED_REASONS


@dataclass
class BranchStats:
    """One branch of one model. ``saved_blocks`` counts transformer blocks not run; ``blocks`` is
    the model's block count, so ``saved_blocks / (steps * blocks)`` is the share of block work
    saved (the gate's own small cost is measured by the benchmark, not estimated here)."""

    blocks: int
    steps: int = 0
    computed: int = 0
    skipped: int = 0
    saved_blocks: int = 0
    forced_by: Counter = field(default_factory=Counter)
    failsafes: Counter = field(default_factory=Counter)
    skipped_by: Counter = field(default_factory=Counter)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def record(self, skipped_by: str | None, reason: str, saved_blocks: int) -> None:
        """One forward: skipped by the gate named ``skipped_by``, or computed for ``reason``."""
        self.steps += 1
        if skipped_by is not None:
            self.skipped += 1
            self.skipped_by[skipped_by] += 1
            self.saved_blocks += saved_blocks
            return
        self.computed += 1
        if reason in FORCED_REASONS:
            self.forced_by[reason] += 1
        elif reason in FAILSAFES:
            self.failsafes[reason] += 1

    def add_metric(self, gate: str, value: float | None) -> None:
        """A value a gate compared with its threshold (None: nothing was compared)."""
        if value is not None:
            self.metrics.setdefault(gate, []).append(value)

    def as_dict(self) -> dict[str, object]:
        """Plain numbers: ``steps``, ``computed``, ``skipped``, ``forced`` (and ``forced_by``
        reason), ``failsafes`` (by kind), ``skipped_by`` gate, ``mean_metric`` by gate and
        ``work_saved`` (share of block work not run)."""
        total = self.steps * self.blocks
        return {
            "steps": self.steps,
            "computed": self.computed,
            "skipped": self.skipped,
            "forced": sum(self.forced_by.values()),
            "forced_by": dict(self.forced_by),
            "failsafes": dict(self.failsafes),
            "skipped_by": dict(self.skipped_by),
            "mean_metric": {gate: sum(v) / len(v) for gate, v in self.metrics.items()},
            "work_saved": self.saved_blocks / total if total else 0.0,
        }


def summary_line(model: str, branches: dict[str, dict[str, object]], residual_bytes: int) -> str:
    """``CacheManager[<model>] summary: cond ...; uncond ...; residuals N MiB``."""
    parts = []
    for branch, s in branches.items():
        forced = ",".join(f"{k}={v}" for k, v in s["forced_by"].items()) or "-"
        failsafes = sum(s["failsafes"].values())
        metric = " ".join(f"{gate}={value:.4g}" for gate, value in s["mean_metric"].items()) or "-"
        parts.append(
            f"{branch} steps={s['steps']} computed={s['computed']} skipped={s['skipped']} "
            f"forced={s['forced']} ({forced}) failsafes={failsafes} mean_metric[{metric}] "
            f"work_saved={s['work_saved']:.1%}"
        )
    memory = f"residuals {residual_bytes / 2**20:.2f} MiB"
    return f"CacheManager[{model}] summary: " + "; ".join([*parts, memory])
