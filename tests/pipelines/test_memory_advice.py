"""The memory advice, said with the arguments' names or the command line's flags."""

from __future__ import annotations

import pytest
import torch

from wan_runtime.pipelines.memory_advice import Step, say, tiling_step, token_steps, weight_steps
from wan_runtime.pipelines.memory_plan import PlanOptions

NONE = PlanOptions(torch.bfloat16, offload_model=False, t5_cpu=False, convert_model_dtype=False,
                   dit_fsdp=False, t5_fsdp=False, stream_blocks=0, dit_fp8=False)


@pytest.mark.parametrize(("step", "argument", "flag"), [
    (Step("offload_model", True), "offload_model True", "--offload_model True"),
    (Step("offload_model", False), "offload_model False", "--offload_model False"),
    (Step("t5_cpu", True, "why"), "t5_cpu (why)", "--t5_cpu (why)"),
    (Step("t5_cpu", False), "no t5_cpu", "--no-t5_cpu"),
    (Step("stream_blocks", "more"), "more stream_blocks", "more --stream_blocks"),
    (Step("vae_tiling", 128), "vae_tiling 128", "--vae_tiling 128"),
])
def test_a_step_names_the_argument_or_the_flag_as_each_is_written(step, argument, flag):
    assert (step.say(flags=False), step.say(flags=True)) == (argument, flag)


def test_the_advice_says_the_flags_share_the_arguments_names():
    steps = [Step("t5_cpu"), Step("dit_fp8")]
    assert say(steps, flags=False) == "to fit, try t5_cpu, dit_fp8 (the command line's flags of those names)"
    assert say(steps, flags=True) == "to fit, try --t5_cpu, --dit_fp8"
    assert say([], flags=True, nothing="nothing") == "nothing"


def options(steps: list[Step]) -> list[tuple[str, object]]:
    return [(step.option, step.value) for step in steps]


def test_the_weights_steps_are_those_not_taken():
    assert options(weight_steps(NONE, most_streamed=None)) == [
        ("offload_model", True), ("t5_cpu", True), ("stream_blocks", "N"), ("dit_fp8", True)]
    done = NONE._replace(offload_model=True, t5_cpu=True, stream_blocks=3, dit_fp8=True, dtype=torch.float32)
    more = [("stream_blocks", "more"), ("dtype", "bfloat16")]
    assert options(weight_steps(done, most_streamed=None)) == more
    assert options(weight_steps(done, most_streamed=3)) == [("dtype", "bfloat16")]


def test_several_processes_add_the_shards_and_fsdp_leaves_no_placement_to_the_dits():
    several = NONE._replace(world=2)
    assert options(weight_steps(several, None))[:3] == [("offload_model", True), ("dit_fsdp", True),
                                                        ("t5_fsdp", True)]
    sharded = several._replace(dit_fsdp=True, t5_fsdp=True)
    assert weight_steps(sharded, None) == []


@pytest.mark.parametrize(("working", "on_device", "expected"), [
    # A DiT's turn under offload_model: the text encoder's steps leave it as it is.
    ("DiT high_noise", ["VAE", "DiT high_noise"], [("stream_blocks", "N"), ("dit_fp8", True),
                                                   ("dtype", "bfloat16")]),
    # The text encoder's turn: the DiTs' steps leave it as it is.
    ("text encoder", ["VAE", "text encoder"], [("t5_cpu", True), ("dtype", "bfloat16")]),
    # The decode beside a DiT that stays: it may take turns, and its weights shrink.
    ("VAE", ["VAE", "DiT"], [("offload_model", True), ("stream_blocks", "N"), ("dit_fp8", True),
                             ("dtype", "bfloat16")]),
    # The speech encoder's turn: nothing lowers its float32 weights or the VAE's.
    ("speech encoder", ["VAE", "speech encoder"], []),
    ("VAE", ["VAE"], []),
])
def test_the_weights_steps_are_those_that_lower_the_stages_models(working, on_device, expected):
    float32 = NONE._replace(dtype=torch.float32)
    assert options(weight_steps(float32, None, working, on_device)) == expected


def test_a_text_encoder_fsdp_shards_takes_no_turns():
    sharded = NONE._replace(world=2, t5_fsdp=True)
    everything = ["VAE", "text encoder", "DiT"]
    assert options(weight_steps(sharded, None, "text encoder", everything)) == [
        ("offload_model", True), ("dit_fsdp", True), ("stream_blocks", "N"), ("dit_fp8", True)]
    assert options(weight_steps(sharded, None, "DiT", everything))[0] == ("dit_fsdp", True)


@pytest.mark.parametrize(("tiling", "value"), [(0, True), (256, 128), (192, 64), (128, 64), (64, None)])
def test_tiles_then_tiles_half_as_wide_down_to_the_smallest(tiling, value):
    step = tiling_step(tiling)
    assert (None if step is None else step.value) == value


def test_the_tokens_split_over_a_launchs_processes_where_they_are_not_yet():
    split = [Step("ulysses_size", 8, "each GPU computes a slice of the tokens")]
    assert token_steps(8, 1, 40) == token_steps(8, 1) == split
    assert token_steps(8, 8, 40) == token_steps(1, 1, 40) == token_steps(3, 1, 40) == []


def test_under_cuda_graphs_what_no_graph_holds_comes_after_going_without_them():
    graphed = NONE._replace(world=2, cuda_graphs=True)
    steps = weight_steps(graphed, None)
    # Where the first of them was: before the steps that change the video.
    assert options(steps) == [("offload_model", True), ("cuda_graphs", False), ("t5_fsdp", True),
                              ("t5_cpu", True), ("dit_fp8", True)]
    assert options(steps[1].then) == [("dit_fsdp", True), ("stream_blocks", "N")]
    assert steps[1].say(flags=True) == (
        "--no-cuda_graphs, then any of --dit_fsdp (each GPU holds a share of the DiT weights), "
        "--stream_blocks N (DiT blocks wait in CPU memory until they run)")
    [one] = [step for step in weight_steps(graphed._replace(world=1), None) if step.option == "cuda_graphs"]
    streamed = "stream_blocks N (DiT blocks wait in CPU memory until they run)"
    assert one.say(flags=False) == f"no cuda_graphs, then {streamed}"
    # Nothing ruled out: the graphs stay.
    assert weight_steps(NONE._replace(dit_fsdp=True, t5_cpu=True, world=2, cuda_graphs=True), None) == []


def test_under_cuda_graphs_the_tokens_split_after_going_without_them():
    [step] = token_steps(8, 1, 40, cuda_graphs=True)
    assert (step.option, step.value, options(step.then)) == ("cuda_graphs", False, [("ulysses_size", 8)])
    assert token_steps(1, 1, 40, cuda_graphs=True)[0].then == ()


def test_the_advice_says_a_step_twice_given_once_with_all_it_opens():
    done = NONE._replace(t5_cpu=True, offload_model=True, dit_fp8=True, cuda_graphs=True)
    weights = weight_steps(done, None)
    advice = say([*weights, *token_steps(2, 1, 40, cuda_graphs=True)], flags=True)
    assert advice == ("to fit, try --no-cuda_graphs (the DiT blocks' graphs keep copies of their input and "
                      "output), then any of --stream_blocks N (DiT blocks wait in CPU memory until they "
                      "run), --ulysses_size 2 (each GPU computes a slice of the tokens)")
