"""``bench_estimate``: a row times the estimate it reports."""

from __future__ import annotations

from benchmarks import bench_estimate, weight_plans
from wan_runtime.pipelines import VideoShape, estimate_memory
from wan_runtime.pipelines.memory_plan import _GIB
from wan_runtime.tasks import task_spec


def test_a_row_is_the_estimate_of_its_video():
    video = VideoShape(128, 64, 5, False, 5.0, vae_tiling=64)
    row = bench_estimate.time_estimate("ti2v-5B", 64, 2, video)
    plan = weight_plans.release_plan("ti2v-5B", offload_model=False)
    assert row["peak_GiB"] == round(estimate_memory(plan, task_spec("ti2v-5B"), video).peak / _GIB, 2) > 0
    assert row["decode"] == "tiles of 64" and row["seconds"] > 0
