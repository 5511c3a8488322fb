"""What the step cache did, per model and branch: counts, reasons, metrics and the work saved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
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
        reason), ``failsafes`` (by kind), ``skipped_by`` gate, ``mean_metric`` by gate (over
        ``metric_count`` values) and ``work_saved`` (share of block work not run)."""
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
            "metric_count": {gate: len(v) for gate, v in self.metrics.items()},
            "work_saved": self.saved_blocks / total if total else 0.0,
        }


_COUNTS = ("steps", "computed", "skipped", "forced")
_BY_KIND = ("forced_by", "failsafes", "skipped_by")


def merge_reports(reports: list[dict[str, dict]]) -> dict[str, dict]:
    """One report for several runs of the same models (s2v-14B's clips, each a denoising run
    with its own manager): counts added, means weighted by what they average, ``residual_bytes``
    the largest (the runs hold their residuals one after another)."""
    merged: dict[str, dict] = {}
    for report in reports:
        for model, entry in report.items():
            into = merged.setdefault(model, {"residual_bytes": 0})
            into["residual_bytes"] = max(into["residual_bytes"], entry["residual_bytes"])
            for branch, stats in branches_of(entry).items():
                into[branch] = _merge_branch(into.get(branch), stats)
    return merged


def _merge_branch(a: dict[str, object] | None, b: dict[str, object]) -> dict[str, object]:
    if a is None:
        return {**b, **{key: dict(b[key]) for key in (*_BY_KIND, "mean_metric", "metric_count")}}
    out = {key: a[key] + b[key] for key in _COUNTS}
    for key in _BY_KIND:
        out[key] = dict(Counter(a[key]) + Counter(b[key]))
    counts = Counter(a["metric_count"]) + Counter(b["metric_count"])
    out["metric_count"] = dict(counts)
    out["mean_metric"] = {
        gate: (a["mean_metric"].get(gate, 0.0) * a["metric_count"].get(gate, 0)
               + b["mean_metric"].get(gate, 0.0) * b["metric_count"].get(gate, 0)) / n
        for gate, n in counts.items()
    }
    out["work_saved"] = work_saved([a, b])
    return out


def work_saved(stats: Iterable[dict[str, object]]) -> float:
    """The share of block work not run over several runs' or branches' ``stats`` of one model:
    the same blocks per step, so the shares weigh by their steps."""
    stats = list(stats)
    steps = sum(s["steps"] for s in stats)
    return sum(s["work_saved"] * s["steps"] for s in stats) / steps if steps else 0.0


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


def summary_lines(report: dict[str, dict]) -> list[str]:
    """``summary_line`` of every model of a ``CacheManager.report()`` (or of merged reports)."""
    return [summary_line(model, branches_of(entry), entry["residual_bytes"])
            for model, entry in report.items()]


def branches_of(entry: dict[str, object]) -> dict[str, dict[str, object]]:
    """The branches' stats (``cond``, ``uncond``) of one model's entry of a report."""
    return {branch: stats for branch, stats in entry.items() if branch != "residual_bytes"}
