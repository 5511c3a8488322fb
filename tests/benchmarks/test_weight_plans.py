"""``weight_plans``: the release architectures' plans hold together (no checkpoint needed)."""

from __future__ import annotations

import pytest

from benchmarks import weight_plans
from wan_runtime.pipelines.memory_plan import VAE


@pytest.mark.parametrize("task", ["i2v-A14B", "ti2v-5B", "s2v-14B"])
def test_each_flag_lowers_the_peak_of_the_release(task):
    peaks = [weight_plans.release_plan(task, **flags).peak for flags in weight_plans.FLAGS.values()]
    everything = weight_plans.release_plan(task, offload_model=False)
    assert everything.peak == sum(f.resident for f in everything.models.values())
    # Everything; offloading; the text encoder on the CPU; then float8, streaming, both.
    assert peaks[0] > peaks[1] >= peaks[2] > peaks[3] > peaks[5] and peaks[2] > peaks[4] > peaks[5]


def test_an_a14b_expert_in_bfloat16_is_29_gb_beside_the_vae():
    plan = weight_plans.release_plan("i2v-A14B", t5_cpu=True)
    assert plan.peak_models == [VAE, "DiT high_noise"]
    assert round(plan.models["DiT high_noise"].resident / 1e9, 2) == 28.95
