"""Telemetry: one report merged from several runs equals the report of one run that saw them all."""

from __future__ import annotations

import pytest

from wan_runtime.cache.gate import SHAPE, WARMUP
from wan_runtime.cache.telemetry import BranchStats, merge_reports

# (skipped_by, reason, metric) per forward
RUN_A = [(None, WARMUP, None), ("teacache", "", 0.02), (None, "", 0.3)]
RUN_B = [(None, SHAPE, None), ("fbcache", "", 0.01), ("fbcache", "", 0.04), (None, WARMUP, None)]


def _feed(stats: BranchStats, forwards) -> BranchStats:
    for skipped_by, reason, metric in forwards:
        stats.add_metric(skipped_by or "teacache", metric)
        stats.record(skipped_by, reason, saved_blocks=4 if skipped_by else 0)
    return stats


def _report(*runs, residual_bytes: int = 100) -> dict:
    stats = BranchStats(blocks=5)
    for run in runs:
        _feed(stats, run)
    return {"s2v": {"cond": stats.as_dict(), "residual_bytes": residual_bytes}}


def test_merged_runs_equal_one_run_of_all_forwards():
    merged = merge_reports([_report(RUN_A), _report(RUN_B, residual_bytes=300)])
    whole = _report(RUN_A, RUN_B, residual_bytes=300)
    got, want = merged["s2v"]["cond"], whole["s2v"]["cond"]
    assert {k: v for k, v in got.items() if k not in ("mean_metric", "work_saved")} == \
        {k: v for k, v in want.items() if k not in ("mean_metric", "work_saved")}
    assert got["mean_metric"] == pytest.approx(want["mean_metric"])
    assert got["work_saved"] == pytest.approx(want["work_saved"])
    assert (got["steps"], got["skipped"], got["forced"], got["failsafes"]) == (7, 3, 2, {SHAPE: 1})
    assert merged["s2v"]["residual_bytes"] == 300


def test_merging_one_report_or_none():
    report = _report(RUN_B)
    assert merge_reports([report]) == report
    assert merge_reports([]) == {} and merge_reports([{}, {}]) == {}
