"""``bench_cache`` on a tiny model: the sweep's rows, and the direct measure of the manager's own
time per step."""

import pytest
import torch

from benchmarks import bench_cache
from wan_runtime.cache import CacheConfig, CacheManager, WanStages
from wan_runtime.models import DiTConfig
from wan_runtime.pipelines import load_pipeline

TINY = DiTConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=64, ffn_dim=128, num_heads=2, num_layers=2,
                 text_dim=64)
STEPS = 3
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    root = bench_cache.write_task(tmp_path_factory.mktemp("bench_cache"), TINY, torch.float32)
    pipeline = load_pipeline(bench_cache.TASK, root, device=CPU, dtype=torch.float32, offload_model=False)
    return bench_cache.Runner(pipeline, bench_cache.Shape("64*64", 5), STEPS)


def test_sweep_reports_exactness_and_the_managers_own_time(runner):
    saved = []
    rows = bench_cache.sweep(runner, bench_cache.settings((0.0,)), 1, STEPS, CPU,
                             checkpoint=lambda rows: saved.append([dict(row) for row in rows]))
    # The quality columns are saved before the timed rounds.
    [early] = saved
    assert [row["setting"] for row in early] == [row["setting"] for row in rows]
    assert all("time_ratio" not in row for row in early) and early[1]["bitwise"] is True
    assert [row["setting"] for row in rows] == ["no cache", "teacache linear 0.0", "teacache poly 0.0",
                                                "fbcache 0.0"]
    assert rows[0]["time_ratio"] == 1.0
    for row in rows[1:]:
        assert row["bitwise"] is True and row["skip_rate"] == 0.0
        assert row["manager_ms_per_step"] > 0 and 0 < row["manager_share"] < 1


def test_clock_charges_the_model_stages_to_the_model_and_detaches(runner):
    forward = CacheManager.forward
    stages = [getattr(WanStages, name) for name in bench_cache.ManagerClock.MODEL_STAGES]
    clock = bench_cache.ManagerClock(CPU)
    with clock.attached():
        runner("clocked", CacheConfig(fbcache=True, fb_thresh=0.0), timed=False)
    assert 0 < clock.manager_seconds < clock.seconds["model"] < clock.seconds["forward"]
    assert CacheManager.forward is forward
    assert [getattr(WanStages, name) for name in bench_cache.ManagerClock.MODEL_STAGES] == stages


@pytest.mark.parametrize(("argv", "told"), [
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--thresholds", "0.1", "-1"], "--thresholds: --teacache_thresh must be a number >= 0, got -1.0"),
])
def test_bad_arguments_are_refused_before_any_work(monkeypatch, capsys, argv, told):
    monkeypatch.setattr("sys.argv", ["bench_cache", *argv])
    monkeypatch.setattr(bench_cache, "write_task", None)  # never reached
    with pytest.raises(SystemExit) as exited:
        bench_cache.main()
    assert exited.value.code == 2 and told in capsys.readouterr().err
