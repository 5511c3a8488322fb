"""Leaving the process group frees the groups at once, not at the interpreter's exit, where a gloo
group's worker thread still holding a collective's tensors aborts the process."""

from __future__ import annotations

import contextlib
import io
import os
import weakref

import pytest
import torch
import torch.distributed as dist

from tests.distributed.dit_inputs import CASES, dit_inputs
from tests.distributed.ranks import run_ranks
from wan_runtime.distributed.launch import leave_process_group
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.tiny_checkpoints import random_dit


def _sharded_forward_then_leave(rank: int) -> None:
    config, grid, per_token = next(iter(CASES.values()))
    model = random_dit(config, seed=0).enable_fsdp(torch.device("cpu"))
    model.enable_sequence_parallel(SequenceParallel.over())
    with torch.inference_mode():
        model(*dit_inputs(config, grid, per_token))
    del model
    world = weakref.ref(dist.group.WORLD)
    assert "pt_gloo_runloop" in _threads()
    leave_process_group()
    assert world() is None
    assert "pt_gloo_runloop" not in _threads()  # every group's worker threads joined


def _threads() -> list[str]:
    return [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]


def test_leaving_frees_the_groups_a_sharded_model_used():
    run_ranks(_sharded_forward_then_leave, 2)


def _failing_run_then_check(rank: int, ckpt_dir: str, save_file: str, debug: bool) -> None:
    from wan_runtime.generate import main
    from wan_runtime.pipelines.base import Settings

    def broken(*args: object) -> None:
        raise RuntimeError("the decoder broke")

    Settings.decode = broken  # after the sharded DiT ran, as a failure mid-run would
    argv = ["--ckpt_dir", ckpt_dir, "--device", "cpu", "--frame_num", "5", "--sample_steps", "2",
            "--ulysses_size", "2", "--dit_fsdp", "--save_file", save_file]
    torch.set_num_threads(1)
    told = io.StringIO()
    with contextlib.redirect_stderr(told):
        assert main(argv + ["--debug"] * debug) == 1
    assert not dist.is_initialized()
    assert "pt_gloo_runloop" not in _threads()  # the traceback's pipeline freed with its groups
    # --debug shows the whole traceback, the others one line.
    assert ("Traceback (most recent call last)" in told.getvalue()) == debug
    assert (f"rank {rank}:\nTraceback" if debug else f"error: rank {rank}: RuntimeError") in told.getvalue()
    assert "RuntimeError: the decoder broke" in told.getvalue()


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_failed_run_frees_the_groups_its_sharded_pipeline_held(ti2v_root, tmp_path, debug):
    run_ranks(_failing_run_then_check, 2, str(ti2v_root), str(tmp_path / "never.mp4"), debug)
    assert not list(tmp_path.iterdir())
