"""``--fit_memory [GIB]``: the placement flags left out are chosen by ``fit_memory`` before anything
loads, told in a line, and the run (or ``--dry_run``'s plan) uses them; refused where there is no
GPU memory to fit. The GPU is faked: the fit reads only its free memory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.cli.test_dry_run import _plan
from wan_runtime.generate import main
from wan_runtime.pipelines import VideoShape, fit_memory
from wan_runtime.pipelines.memory_fit import RESERVED, needed

GIB = 2**30
# The tiny ti2v-5B's video at its size, 5 frames, from text.
FLAGS = ["--frame_num", "5", "--device", "cuda", "--dry_run"]
VIDEO = VideoShape(1280, 704, 5, False, 5.0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A GPU of 80 GiB with ``free.bytes`` of them free."""
    free = SimpleNamespace(bytes=80 * GIB)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free.bytes, 80 * GIB))
    properties = SimpleNamespace(total_memory=80 * GIB, name="fake GPU", major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    return free


@pytest.mark.parametrize("budget", ["free", "least"])
def test_the_dry_run_plans_the_placement_the_fit_chooses(ti2v_root, fake_gpu, capsys, budget):
    frugal = fit_memory("ti2v-5B", ti2v_root, [VIDEO], budget_gib=70, device="cuda",
                        offload_model=True, t5_cpu=True, stream_blocks=1)
    fake_gpu.bytes = 80 * GIB if budget == "free" else needed(frugal.busiest) + RESERVED
    expected = fit_memory("ti2v-5B", ti2v_root, [VIDEO], device="cuda")
    plan, out = _plan(capsys, ["--ckpt_dir", str(ti2v_root), *FLAGS, "--fit_memory"])
    assert f"fit_memory: {expected.describe()}" in out
    assert (plan["t5_cpu"], plan["stream_blocks"]) == (str(expected.options["t5_cpu"]),
                                                         str(expected.options["stream_blocks"]))
    if budget == "free":
        assert expected.options == {"offload_model": False, "t5_cpu": False, "stream_blocks": 0}
    else:  # the decode needs the most, with the VAE alone on the GPU: offloading suffices
        assert expected.options == {"offload_model": True, "t5_cpu": False, "stream_blocks": 0}


def test_a_budget_in_gib_and_the_flags_given_stand(ti2v_root, fake_gpu, capsys):
    _, out = _plan(capsys, ["--ckpt_dir", str(ti2v_root), *FLAGS, "--fit_memory", "70", "--offload_model",
                            "True", "--stream_blocks", "1"])
    [line] = [line for line in out if line.startswith("fit_memory: ")]
    assert line.startswith("fit_memory: offload_model True, t5_cpu False, stream_blocks 1: the ")
    assert line.endswith(" of the 70.00 GiB budget")


def test_the_run_loads_with_the_placement_and_out_of_memory_advises_a_smaller_budget(
    ti2v_root, fake_gpu, monkeypatch, capsys
):
    loaded = {}

    def load_pipeline(**kwargs):
        loaded.update(kwargs)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. More")

    monkeypatch.setattr("wan_runtime.pipelines.load_pipeline", load_pipeline)
    flags = [flag for flag in FLAGS if flag != "--dry_run"]
    assert main(["--ckpt_dir", str(ti2v_root), *flags, "--fit_memory", "70", "--t5_cpu"]) == 1
    # The advice reads the placement the fit chose: every model stays on the GPU.
    assert (loaded["offload_model"], loaded["t5_cpu"], loaded["stream_blocks"]) == (False, True, 0)
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: out of memory in the model loading stage: CUDA out of memory. Tried to "
                            "allocate 2.00 GiB; to fit, try smaller --fit_memory (a budget in GiB; the fit's "
                            "estimate fell short here), --offload_model True (")


def test_nothing_that_fits_is_an_input_error_before_loading(ti2v_root, fake_gpu, capsys):
    assert main(["--ckpt_dir", str(ti2v_root), *FLAGS, "--fit_memory", "2.02"]) == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: no placement of the models fits the video in 2.02 GiB: with the least "
                            "on the GPU, offload_model True, t5_cpu True, stream_blocks 1: the ")


@pytest.mark.parametrize(("argv", "problem"), [
    (["--device", "cpu", "--fit_memory"],
     "--fit_memory places the models for a GPU's memory; on the CPU every model is in its memory"),
    (["--device", "cuda", "--fit_memory", "-3"], "--fit_memory takes a GPU memory budget in GiB above 0 (or "
                                                 "none: the GPU's free memory), got -3"),
    (["--device", "cuda", "--fit_memory", "nan"], "--fit_memory takes a GPU memory budget in GiB above 0"),
])
def test_fit_memory_is_refused_where_there_is_nothing_to_fit(ti2v_root, fake_gpu, capsys, argv, problem):
    assert main(["--ckpt_dir", str(ti2v_root), *argv]) == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith(f"error: {problem}")


def test_fit_memory_without_a_gpu_says_so(ti2v_root, monkeypatch, capsys):
    """Not "pass --device cuda", which would be refused in turn."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--ckpt_dir", str(ti2v_root), "--fit_memory", "20"]) == 2
    [error] = capsys.readouterr().err.splitlines()
    told = f"(leave it out, or run where torch sees a GPU; this torch, {torch.__version__}, sees none)"
    assert error.endswith(told), error


def test_each_videos_shape_carries_its_step_cache(ti2v_root):
    """So that the estimate, and the fit, count the cache's tensors."""
    from tests.cli.test_dry_run import _job
    from wan_runtime.cache import CacheConfig
    from wan_runtime.generate import _video_shape

    cached = _video_shape(_job("--ckpt_dir", str(ti2v_root), "--teacache"), (1280, 704))
    assert cached.cache == CacheConfig(teacache=True)
    assert _video_shape(_job("--ckpt_dir", str(ti2v_root)), (1280, 704)).cache is None


def _batch(tmp_path, *lines: dict):
    import json

    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_batch_line_that_cannot_fit_is_named(ti2v_root, fake_gpu, tmp_path, capsys):
    small = fit_memory("ti2v-5B", ti2v_root, [VIDEO], budget_gib=70, device="cuda")
    budget = needed(small.busiest) / GIB
    batch = _batch(tmp_path, {"prompt": "a fox"}, {"prompt": "a long fox", "frame_num": 121},
                   {"prompt": "a cat"})
    argv = ["--ckpt_dir", str(ti2v_root), *FLAGS, "--fit_memory", f"{budget}", "--batch", str(batch)]
    assert main(argv) == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: --batch line 2: no placement of the models fits the video in ")


def test_the_dry_run_fits_only_the_videos_the_run_would_make(ti2v_root, fake_gpu, tmp_path, capsys):
    small = fit_memory("ti2v-5B", ti2v_root, [VIDEO], budget_gib=70, device="cuda")
    budget = needed(small.busiest) / GIB
    made = tmp_path / "long.mp4"
    made.write_bytes(b"made before")
    batch = _batch(tmp_path, {"prompt": "a fox"}, {"prompt": "a long fox", "frame_num": 121,
                                                   "save_file": str(made)})
    argv = ["--ckpt_dir", str(ti2v_root), *FLAGS, "--fit_memory", f"{budget}", "--batch", str(batch),
            "--skip_existing"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{made} exists; skipped (--skip_existing)" in out and "fit_memory: " in out
