"""The benchmarks' shared parts: functions timed in turns, none always after the same one; cases
run and saved one by one; random models drawn once."""

import json
from dataclasses import replace

import pytest
import torch

from benchmarks import common
from benchmarks.common import median_seconds_in_turns, run_cases
from wan_runtime.models import DiTConfig

TINY = DiTConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=64, ffn_dim=128, num_heads=2, num_layers=1)
OTHER = replace(TINY, num_layers=2)


def test_turns_rotate_which_function_runs_first():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = median_seconds_in_turns(fns, torch.device("cpu"), warmup=1, repeat=3)
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"
    assert sorted(seconds) == ["a", "b", "c"] and all(value >= 0 for value in seconds.values())


def _run(case: int) -> dict:
    if case == 2:
        raise RuntimeError("out of memory")
    return {"case": case, "ms": 1.0}


def test_a_failing_case_costs_its_row_alone_and_the_script_exits_1(tmp_path, capsys):
    """Every row saved, the failing one with its error, the cases after it run; exit 1 at the end."""
    with pytest.raises(SystemExit) as stopped:
        run_cases("demo", torch.device("cpu"), [1, 2, 3], _run, None, tmp_path)
    assert str(stopped.value) == "demo: 1 of 3 cases failed: case=2: RuntimeError: out of memory"
    [saved] = tmp_path.iterdir()
    rows = json.loads(saved.read_text())["rows"]
    assert rows == [{"case": 1, "ms": 1.0}, {"case": "2", "error": "RuntimeError: out of memory"},
                    {"case": 3, "ms": 1.0}]
    assert "Traceback" in capsys.readouterr().err


def test_the_exit_names_each_failed_case_and_check_and_the_table_shows_them(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_cases("demo", torch.device("cpu"), [1, 2, 3], _run, ["ms"], tmp_path,
                  label=lambda case: {"n": case}, checks=lambda row: ["fast"] if row["case"] == 3 else [])
    assert str(stopped.value) == "demo: 2 of 3 cases failed: n=2: RuntimeError: out of memory; n=3: fast"
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ms")]
    assert header[0].split() == ["ms", "n", "error"]  # what names the failed case, beside the columns


def test_without_keep_going_the_error_is_raised(tmp_path):
    with pytest.raises(RuntimeError, match="out of memory"):
        run_cases("demo", torch.device("cpu"), [1, 2, 3], _run, None, tmp_path, keep_going=False)
    [saved] = tmp_path.iterdir()
    assert json.loads(saved.read_text())["rows"] == [{"case": 1, "ms": 1.0}]


def test_host_dit_draws_a_model_once_for_consecutive_cases(monkeypatch):
    monkeypatch.setattr(common, "_HOST_DITS", {})  # none of this test's stand-ins left for others
    drawn = []
    monkeypatch.setattr(common, "random_dit", lambda config, seed, model_class: drawn.append(config) or
                        torch.nn.Linear(2, 2))
    first, second = common.host_dit(TINY), common.host_dit(TINY)
    assert drawn == [TINY] and first is not second  # copies: a case may move or change its own
    assert torch.equal(first.weight, second.weight)
    common.host_dit(OTHER)
    common.host_dit(TINY)
    assert drawn == [TINY, OTHER, TINY]  # only the latest model is kept
