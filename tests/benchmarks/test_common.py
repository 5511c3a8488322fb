"""The benchmarks' shared timing: functions timed in turns, none always after the same one."""

import torch

from benchmarks.common import median_seconds_in_turns


def test_turns_rotate_which_function_runs_first():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = median_seconds_in_turns(fns, torch.device("cpu"), warmup=1, repeat=3)
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"
    assert sorted(seconds) == ["a", "b", "c"] and all(value >= 0 for value in seconds.values())
