"""``gpu_pipelines``' verdict on its rows: which checks did not hold."""

from benchmarks.gpu_pipelines import _failed_checks

GOOD = {"offload": True, "graphs": True, "finite": True, "same_seed_same_video": True, "same_as_eager": True,
        "dits_on_cpu_after": True}


def test_a_row_whose_checks_hold_passes():
    assert _failed_checks(GOOD) == []
    assert _failed_checks({**GOOD, "offload": False, "dits_on_cpu_after": False}) == []  # kept on the GPU


def test_each_check_that_did_not_hold_is_named():
    row = {**GOOD, "finite": False, "same_as_eager": False, "dits_on_cpu_after": False}
    assert _failed_checks(row) == ["finite", "same_as_eager", "dits_on_cpu_after"]
    ungraphed = {key: value for key, value in GOOD.items() if key != "same_as_eager"}
    assert _failed_checks({**ungraphed, "same_seed_same_video": False}) == ["same_seed_same_video"]
