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


def test_the_release_videos_are_the_official_defaults():
    shapes = {task: weight_plans.release_video(task) for task in ("i2v-A14B", "ti2v-5B", "s2v-14B")}
    assert [(v.width, v.height, v.frame_num, v.image) for v in shapes.values()] == [
        (1280, 720, 81, True), (1280, 704, 121, False), (1280, 704, 80, True)]
    assert shapes["i2v-A14B"].guide == (3.5, 3.5)
    assert (shapes["s2v-14B"].clips, shapes["s2v-14B"].audio_samples) == (2, weight_plans.SPEECH_SAMPLES)
    assert weight_plans.release_video("ti2v-5B", 512).vae_tiling == 512


def test_ti2v_at_its_release_size_peaks_in_the_decode():
    from wan_runtime.pipelines import estimate_memory
    from wan_runtime.tasks import task_spec

    plan = weight_plans.release_plan("ti2v-5B", t5_cpu=True)
    estimate = estimate_memory(plan, task_spec("ti2v-5B"), weight_plans.release_video("ti2v-5B"))
    assert estimate.busiest.stage == "vae_decode" and estimate.peak > 16 * 2**30


def test_more_gpus_take_less_of_each():
    from wan_runtime.pipelines import estimate_memory
    from wan_runtime.tasks import task_spec

    video = weight_plans.release_video("i2v-A14B")
    peaks = []
    for flags in weight_plans.SEVERAL_GPUS.values():
        plan = weight_plans.release_plan("i2v-A14B", **flags)
        estimate = estimate_memory(plan, task_spec("i2v-A14B"), video, ulysses=flags["world"])
        denoise = next(stage for stage in estimate.stages if stage.stage == "denoise")
        peaks.append((plan.peak, denoise.activations))
    for more, fewer in zip(peaks, peaks[1:], strict=False):  # the weights and the step's activations
        assert more[0] > fewer[0] and more[1] > fewer[1], peaks
