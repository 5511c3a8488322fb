"""``fit_memory``: the placement (offload_model, t5_cpu, stream_blocks) chosen for a budget is the
first in the order of speed under which every stage of every video fits, the options given are
kept, and what cannot fit is refused with what else would lower the peak."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from tests.pipelines.test_memory_plan import plan as cuda_plan
from wan_runtime.errors import InputError
from wan_runtime.pipelines import VideoShape, check_pipeline, estimate_memory, fit_memory
from wan_runtime.pipelines.memory_fit import (
    ACTIVATION_MARGIN,
    RESERVED,
    WORKSPACE,
    fit_placement,
    needed,
    placements,
)
from wan_runtime.pipelines.memory_plan import TEXT_ENCODER
from wan_runtime.tasks import task_spec

GIB = 2**30
I2V = VideoShape(64, 48, 5, True, (3.5, 3.5))
I2V_TILED = VideoShape(64, 48, 5, True, (1.0, 3.5), vae_tiling=64)


def _base(root):
    return cuda_plan("i2v-A14B", root)


def _estimates(plan, *videos):
    return {video: estimate_memory(plan, task_spec("i2v-A14B"), video) for video in videos}


def _most_needed(plan, estimates, placement) -> int:
    placed = plan.placed(*placement)
    return max(needed(stage) for e in estimates.values() for stage in e.placed(placed).stages)


def test_placements_go_from_the_fastest_run_to_the_most_frugal(i2v_root):
    plan = _base(i2v_root)
    assert plan.most_streamed == 1
    assert list(placements(plan, {})) == [
        (False, False, 0), (True, False, 0), (False, False, 1), (True, False, 1),
        (False, True, 0), (True, True, 0), (False, True, 1), (True, True, 1),
    ]
    given = {"offload_model": True, "stream_blocks": 1}
    assert list(placements(plan, given)) == [(True, False, 1), (True, True, 1)]


def test_an_estimate_placed_otherwise_is_the_estimate_of_that_placement(i2v_root):
    plan = _base(i2v_root)
    for video, estimate in _estimates(plan, I2V, I2V_TILED).items():
        for placement in placements(plan, {}):
            placed = plan.placed(*placement)
            assert estimate.placed(placed) == estimate_memory(placed, task_spec("i2v-A14B"), video)
    assert TEXT_ENCODER not in {stage.model for stage in estimate.placed(plan.placed(True, True, 0)).stages}


def test_fsdp_shards_stay_on_the_gpus_and_the_rest_is_placed_as_in_one_process(i2v_root):
    """Sharded DiTs are neither offloaded nor streamed, a sharded text encoder not kept on the
    CPU; what else a sharded plan places is the plan made for that placement."""
    dits = cuda_plan("i2v-A14B", i2v_root, world=2, dit_fsdp=True)
    encoder = cuda_plan("i2v-A14B", i2v_root, world=2, t5_fsdp=True)
    both = cuda_plan("i2v-A14B", i2v_root, world=2, dit_fsdp=True, t5_fsdp=True)
    assert list(placements(dits, {})) == [(False, False, 0), (False, True, 0)]
    assert list(placements(encoder, {})) == [(False, False, 0), (True, False, 0), (False, False, 1),
                                              (True, False, 1)]
    assert list(placements(both, {})) == [(False, False, 0)]
    for sharded, fsdp in ((dits, {"dit_fsdp": True}), (encoder, {"t5_fsdp": True})):
        for offload_model, t5_cpu, stream_blocks in placements(sharded, {}):
            expected = cuda_plan("i2v-A14B", i2v_root, world=2, offload_model=offload_model, t5_cpu=t5_cpu,
                                 stream_blocks=stream_blocks, **fsdp)
            assert sharded.placed(offload_model, t5_cpu, stream_blocks) == expected
    refused = ((dits, (True, False, 0)), (dits, (False, False, 1)), (encoder, (False, True, 0)))
    for sharded, placement in refused:
        with pytest.raises(ValueError, match="FSDP's shards stay on the GPUs"):
            sharded.placed(*placement)


def test_the_first_placement_that_fits_every_video_is_chosen(i2v_root):
    plan = _base(i2v_root)
    estimates = _estimates(plan, I2V, I2V_TILED)
    order = list(placements(plan, {}))
    costs = [_most_needed(plan, estimates, placement) for placement in order]
    # Each budget from what a placement needs: the first of those it fits is the one chosen.
    for budget in sorted(set(costs)):
        fit = fit_placement(plan, estimates, budget, {})
        first = next(p for p, cost in zip(order, costs, strict=True) if cost <= budget)
        assert tuple(fit.options.values()) == first
        assert needed(fit.busiest) <= budget and fit.budget == budget
        assert set(fit.estimates) == {I2V, I2V_TILED}
    assert costs[0] > min(costs)  # the tiny models still make the choice matter


def test_a_stage_needs_its_weights_its_activations_with_a_margin_and_a_workspace():
    from wan_runtime.pipelines import StagePeak

    stage = StagePeak("denoise", "DiT", 10 * GIB, 5 * GIB)
    assert needed(stage) == 10 * GIB + int(ACTIVATION_MARGIN * 5 * GIB) + WORKSPACE


def test_the_options_given_are_kept(i2v_root):
    plan = _base(i2v_root)
    estimates = _estimates(plan, I2V)
    fit = fit_placement(plan, estimates, 10**15, {"offload_model": True, "stream_blocks": 1})
    assert fit.options == {"offload_model": True, "t5_cpu": False, "stream_blocks": 1}
    described = fit.describe()
    assert described.startswith("offload_model True, t5_cpu False, stream_blocks 1: the ")
    assert "GiB of weights, 1.2 x " in described
    assert "GiB of activations and 2 GiB of workspace) of the" in described


def test_nothing_that_fits_is_refused_with_what_else_lowers_the_peak(i2v_root):
    plan = _base(i2v_root)
    estimates = _estimates(plan, I2V)
    least = _most_needed(plan, estimates, (True, True, 1))
    with pytest.raises(InputError) as error:
        fit_placement(plan, estimates, least - 1, {})
    message = str(error.value)
    assert message.startswith("no placement of the models fits the video in ")
    assert "with the least on the GPU, offload_model True, t5_cpu True, stream_blocks 1: the " in message
    assert "smaller size, fewer frame_num" in message
    assert "dit_fp8" in message and "to fit, " in message
    # One byte over: the need and the budget read apart.
    need, budget = re.search(r"needs the most, ([\d.]+) GiB .* of the ([\d.]+) GiB budget", message).groups()
    assert need != budget, message
    fit_placement(plan, estimates, least, {})


def _fake_gpu(monkeypatch, free: int) -> None:
    """A GPU of twice ``free`` bytes, half of them free."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    properties = SimpleNamespace(total_memory=2 * free, name="fake GPU", major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)


def test_fit_memory_checks_the_folder_and_fits_the_free_memory_by_default(i2v_root, monkeypatch):
    plan = _base(i2v_root)
    estimates = _estimates(plan, I2V)
    frugal = _most_needed(plan, estimates, (True, False, 0))
    _fake_gpu(monkeypatch, frugal + RESERVED)
    fit = fit_memory("i2v-A14B", i2v_root, [I2V, I2V], device="cuda", dtype=torch.bfloat16)
    assert fit.options == {"offload_model": True, "t5_cpu": False, "stream_blocks": 0}
    assert fit.budget == frugal and list(fit.estimates) == [I2V]
    fixed = fit_memory("i2v-A14B", i2v_root, [I2V], budget_gib=frugal / GIB, device="cuda", stream_blocks=1)
    assert fixed.options["stream_blocks"] == 1
    # The plan of what the fit chose is the one loading checks against the GPU's memory.
    _fake_gpu(monkeypatch, -(-fit.plan.peak // 2))
    assert check_pipeline("i2v-A14B", i2v_root, device="cuda", **fit.options) == fit.plan
    _fake_gpu(monkeypatch, fit.plan.peak // 2 - 1)
    with pytest.raises(InputError, match="the weights alone would take"):
        check_pipeline("i2v-A14B", i2v_root, device="cuda", **fit.options)


def test_a_budget_above_the_free_memory_is_warned_of_and_no_free_memory_refused(i2v_root, monkeypatch):
    _fake_gpu(monkeypatch, 2 * GIB)
    with pytest.warns(UserWarning, match="a budget of 500.00 GiB is more than the 2.00 GiB the GPU has free"):
        fit_memory("i2v-A14B", i2v_root, [I2V], budget_gib=500, device="cuda")
    _fake_gpu(monkeypatch, RESERVED)
    with pytest.raises(InputError, match="the GPU has 1.00 GiB free, no more than the 1 GiB the fit keeps"):
        fit_memory("i2v-A14B", i2v_root, [I2V], device="cuda")
    _fake_gpu(monkeypatch, RESERVED + 2 * GIB)
    refused = r"a budget of 2.00 GiB \(the GPU's free memory less the 1 GiB reserve\) holds nothing beside"
    with pytest.raises(InputError, match=refused):
        fit_memory("i2v-A14B", i2v_root, [I2V], device="cuda")


@pytest.mark.parametrize(("arguments", "problem"), [
    ({"videos": []}, "fit_memory needs the videos to fit"),
    ({"budget_gib": 0}, "budget_gib must be a number of GiB above 0, got 0"),
    ({"budget_gib": "24"}, "budget_gib must be a number of GiB above 0, got '24'"),
    ({"budget_gib": True}, "budget_gib must be a number of GiB above 0, got True"),
    ({"budget_gib": float("inf")}, "budget_gib must be a number of GiB above 0, got inf"),
    ({"budget_gib": 2}, "a budget of 2.00 GiB holds nothing beside the 2 GiB each stage keeps for the"),
    ({"device": "cpu"}, "fit_memory places the models for a GPU's memory; on cpu every model stays"),
    ({"ulysses_size": 2}, "ulysses_size 2 splits each DiT forward over 2 processes but this launch has 1"),
    ({"dtype": torch.float16}, "dtype must be torch.bfloat16"),
    ({"videos": I2V}, "fit_memory takes a list of the videos to fit (VideoShape), got VideoShape: pass "),
    ({"videos": [(64, 48, 5)]}, "a video must be a VideoShape, got tuple"),
    ({"videos": [VideoShape(64, 48, 5, True, 3.5, 96)]}, "VideoShape.vae_tiling must be a tile size"),
    ({"offload": True}, "fit_memory takes load_pipeline's arguments: got an unexpected keyword argument"),
])
def test_fit_memory_refuses_what_it_cannot_fit(i2v_root, monkeypatch, arguments, problem):
    _fake_gpu(monkeypatch, 80 * GIB)
    arguments = {"videos": [I2V], "device": "cuda", **arguments}
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        fit_memory("i2v-A14B", i2v_root, **arguments)


def test_the_videos_are_fitted_as_generate_resolves_them(i2v_root, monkeypatch):
    """A list of guide scales (unhashable) and ``vae_tiling=True`` are what ``generate`` takes."""
    _fake_gpu(monkeypatch, 80 * GIB)
    fit = fit_memory("i2v-A14B", i2v_root, [VideoShape(64, 48, 5, True, [1.0, 3.5], True)], device="cuda")
    assert list(fit.estimates) == [VideoShape(64, 48, 5, True, (1.0, 3.5), 512)]


def test_cuda_graphs_are_fitted_without_streamed_blocks(i2v_root, monkeypatch):
    """A streamed block's weights move under its graph: the fit takes the next placement instead."""
    plan = _base(i2v_root)
    _fake_gpu(monkeypatch, _most_needed(plan, _estimates(plan, I2V), (False, False, 1)) + RESERVED)
    options = {"device": "cuda", "offload_model": False}
    assert fit_memory("i2v-A14B", i2v_root, [I2V], **options).options["stream_blocks"] == 1
    graphed = fit_memory("i2v-A14B", i2v_root, [I2V], cuda_graphs=True, **options)
    assert graphed.options == {"offload_model": False, "t5_cpu": True, "stream_blocks": 0}


def test_graphs_that_fit_nowhere_are_told_what_streams_once_they_go(i2v_root, monkeypatch):
    """Under CUDA graphs no block streams: the refusal says to drop the graphs, then stream blocks."""
    plan = _base(i2v_root)
    _fake_gpu(monkeypatch, _most_needed(plan, _estimates(plan, I2V), (True, True, 1)) + RESERVED)
    with pytest.raises(InputError) as error:
        fit_memory("i2v-A14B", i2v_root, [I2V], device="cuda", cuda_graphs=True)
    message = str(error.value)
    assert message.startswith("no placement of the models fits the video in ")
    assert "stream_blocks 0: the " in message
    copies = "no cuda_graphs (the DiT blocks' graphs keep copies of their input and output)"
    assert f"{copies}, then stream_blocks" in message
    fit_memory("i2v-A14B", i2v_root, [I2V], device="cuda")  # streamed blocks fit it
