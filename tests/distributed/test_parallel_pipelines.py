"""Pipelines over two CPU processes (gloo) with the official multi-GPU settings (and the VAE split
in bands of rows): every process's video is the one a single process makes (to float32 rounding),
with and without the step cache, whose decisions are the single process's; settings that cannot
work are refused before anything loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributed.tensor import DTensor

from tests.distributed.ranks import run_ranks
from tests.pipelines.images import gradient_image
from tests.tolerances import (
    COMPILED_VS_EAGER_FP32,
    PARALLEL_VS_ONE_PROCESS_BF16,
    PARALLEL_VS_ONE_PROCESS_FP32,
    rel_l2,
)
from wan_runtime.cache import CacheConfig
from wan_runtime.errors import InputError
from wan_runtime.pipelines import load_pipeline

RUN = {"size": "64*64", "sampling_steps": 4, "seed": 3, "progress": False}
ALL = {"ulysses_size": 2, "dit_fsdp": True, "t5_fsdp": True}
# A threshold the tiny models' first-block changes cross now and then: some steps skip, some not.
FBCACHE = CacheConfig(fbcache=True, fb_thresh=0.3, fb_warmup=1, fb_last_steps=0, fb_downsample=3)
TEACACHE = CacheConfig(teacache=True, teacache_thresh=0.2, teacache_warmup=1, teacache_last_steps=0)


def _same_videos(rank: int, task: str, root, options: dict, arguments: dict) -> None:
    one = load_pipeline(task, root, device="cpu", dtype=torch.float32)
    several = load_pipeline(task, root, device="cpu", dtype=torch.float32, **options)
    assert several.vae.row_split.world == 2 and one.vae.row_split is None  # the VAE's rows split too
    if task == "s2v-14B":  # a short motion context, as tests/pipelines/test_s2v.py runs it
        one.motion_frames = several.motion_frames = (9, 3)
    held = []  # after each step, whether a sharded DiT holds more than its share

    def gathered(event) -> None:
        dit = several.dits[event.model]
        held.append(options.get("dit_fsdp", False) and not isinstance(dit.patch_embedding.weight, DTensor))

    for cache in (None, FBCACHE):
        expected = one.generate("a cat", cache=cache, **arguments)
        got = several.generate("a cat", cache=cache, on_step=gathered, **arguments)
        assert rel_l2(got, expected) <= PARALLEL_VS_ONE_PROCESS_FP32, cache
        skipped = 0
        for model, branches in one.cache_report().items():
            for branch, stats in branches.items():
                if isinstance(stats, dict):
                    mine = several.cache_report()[model][branch]
                    assert (mine["computed"], mine["skipped"]) == (stats["computed"], stats["skipped"])
                    skipped += stats["skipped"]
        assert (skipped > 0) == (cache is not None), "the cached run skips steps"
    # Its work done, a sharded model holds its share only: the DiT after each step (the cached
    # run's too), the text encoder after the run.
    assert held and not any(held)
    if options.get("t5_fsdp"):
        assert isinstance(several.text_encoder.model.shared.weight, DTensor)
    if options.get("dit_fsdp"):
        assert all(isinstance(dit.patch_embedding.weight, DTensor) for dit in several.dits.values())


def _speech() -> np.ndarray:
    t = np.arange(8000) / 16000
    return (0.4 * np.sin(2 * np.pi * (200 + 600 * t) * t)).astype(np.float32)


CASES = {
    "i2v, two experts, 80x60 image": ("i2v-A14B", ALL, {"image": gradient_image(80, 60), "frame_num": 5}),
    "ti2v with an image: per-token timesteps": ("ti2v-5B", ALL, {"image": gradient_image(64, 64),
                                                                 "frame_num": 5}),
    "s2v: audio injection on the gathered sequence": ("s2v-14B", ALL,
                          {"image": gradient_image(72, 56), "audio": _speech(), "infer_frames": 4,
                           "num_clip": 1, "sampling_steps": 3}),
}


@pytest.mark.parametrize("case", CASES)
def test_several_processes_make_the_single_process_video(case, request):
    """Without a cache and with FBCache (which then takes the single process's decisions)."""
    task, options, arguments = CASES[case]
    root = request.getfixturevalue(f"{task.split('-')[0]}_root")
    run_ranks(_same_videos, 2, task, root, options, {**RUN, **arguments})


def _bf16(rank: int, root) -> None:
    arguments = {**RUN, "image": gradient_image(64, 64), "frame_num": 5}
    converted, plain = (load_pipeline("ti2v-5B", root, device="cpu", convert_model_dtype=convert)
                        for convert in (True, False))
    several = load_pipeline("ti2v-5B", root, device="cpu", **ALL)
    for cache in (None, TEACACHE):
        expected, got, unconverted = (pipeline.generate("a cat", cache=cache, **arguments)
                                      for pipeline in (converted, several, plain))
        assert rel_l2(got, expected) <= PARALLEL_VS_ONE_PROCESS_BF16
        assert rel_l2(unconverted, expected) > PARALLEL_VS_ONE_PROCESS_BF16


def test_sharded_bfloat16_computes_as_the_official_fsdp_from_converted_weights(ti2v_root):
    """The default dtype: --dit_fsdp's numbers are --convert_model_dtype's (the official FSDP casts
    every weight to bfloat16), measurably not those of the float32 norm and modulation weights."""
    run_ranks(_bf16, 2, ti2v_root)


def _compiled(rank: int, root) -> None:
    arguments = {**RUN, "image": gradient_image(64, 64), "frame_num": 5}
    one = load_pipeline("ti2v-5B", root, device="cpu", dtype=torch.float32)
    expected = one.generate("a cat", **arguments)
    several = load_pipeline("ti2v-5B", root, device="cpu", dtype=torch.float32, compile=True, **ALL)
    assert rel_l2(several.generate("a cat", **arguments), expected) <= COMPILED_VS_EAGER_FP32


def test_compiled_blocks_run_split_and_sharded(ti2v_root):
    """``--compile`` with every several-GPU setting: the exchanges are functional collectives,
    which Dynamo traces, and the blocks gather their weights as they run."""
    run_ranks(_compiled, 2, ti2v_root)


def _one_rank_alone(rank: int, root) -> None:
    if rank == 0:
        pipeline = load_pipeline("ti2v-5B", root, device="cpu", dtype=torch.float32)
        assert not pipeline.distributed
        pipeline.generate("a cat", cache=FBCACHE, **{**RUN, "seed": -1, "frame_num": 5})


def test_a_pipeline_of_one_process_in_a_process_group_runs_alone(ti2v_root):
    """A pipeline loaded without the settings (say, rank 0's own preview in a larger job) takes no
    collective, for its random seed or its cache: the other ranks never join one."""
    run_ranks(_one_rank_alone, 2, ti2v_root)


def test_settings_need_a_process_group(ti2v_root):
    with pytest.raises(InputError, match="ulysses_size 2 splits each DiT forward over 2 processes but this "
                                         "launch has 1"):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", ulysses_size=2)
    with pytest.raises(InputError, match="dit_fsdp shards weights over the processes of a torchrun launch"):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", dit_fsdp=True)


def _refused(rank: int, root) -> None:
    cases = [
        ({"ulysses_size": 3}, "ulysses_size 3 splits each DiT forward over 3 processes but this launch"),
        ({"dit_fsdp": True, "offload_model": True}, "set offload_model False"),
        ({"t5_fsdp": True, "t5_cpu": True}, "t5_fsdp shards the text encoder over the GPUs and t5_cpu keeps"),
        ({"ulysses_size": 0}, "ulysses_size must be a positive number of processes"),
    ]
    for options, message in cases:
        with pytest.raises(InputError, match=message):
            load_pipeline("ti2v-5B", root, device="cpu", **options)


def test_settings_that_cannot_work_are_refused_in_a_process_group(ti2v_root):
    run_ranks(_refused, 2, ti2v_root)
