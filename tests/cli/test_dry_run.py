"""``--dry_run``: every check of a run, the plan printed, no model loaded, nothing written."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from safetensors.torch import save_file

from wan_runtime.demo import NOTICE
from wan_runtime.generate import main


@pytest.fixture
def no_loading(monkeypatch):
    def loading(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    monkeypatch.setattr("wan_runtime.pipelines.loading.load_text_encoder", loading)


def _plan(capsys, argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The printed plan's settings, and every line printed."""
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("dry run: every argument and file"))
    return dict(line.strip().split(": ", 1) for line in out[start + 1:] if line.startswith("  ")), out


def test_ti2v_plan_at_the_official_size(ti2v_root, tmp_path, monkeypatch, capsys, no_loading):
    monkeypatch.chdir(tmp_path)
    plan, _ = _plan(capsys, ["--ckpt_dir", str(ti2v_root), "--dry_run", "--prompt", "a fox"])
    assert (plan["task"], plan["size"], plan["frame_num"]) == ("ti2v-5B", "1280*704", "121")
    assert plan["seed"] == "random"
    assert (plan["sampling_steps"], plan["guide_scale"], plan["prompt"]) == ("50", "5.0", "a fox")
    assert list(tmp_path.iterdir()) == []
    # Every setting, those that place the models or change the numbers without a flag of the video's too.
    plan, _ = _plan(capsys, ["--ckpt_dir", str(ti2v_root), "--dry_run", "--device", "cpu",
                             "--convert_model_dtype", "--offload_model", "False"])
    assert (plan["convert_model_dtype"], plan["offload_model"], plan["t5_cpu"]) == ("True", "False", "False")


def test_i2v_plan_takes_the_images_aspect_ratio(i2v_root, tmp_path, capsys, no_loading):
    from PIL import Image

    image = tmp_path / "tall.png"
    Image.new("RGB", (480, 832), (1, 2, 3)).save(image)
    plan, _ = _plan(capsys, ["--task", "i2v-A14B", "--ckpt_dir", str(i2v_root), "--image", str(image),
                             "--size", "832*480", "--base_seed", "7", "--sample_guide_scale", "2",
                             "--dry_run"])
    assert (plan["size"], plan["seed"], plan["guide_scale"]) == ("480*832", "7", "(2.0, 2.0)")


def test_demo_dry_run_says_it_is_a_demo(capsys, tmp_path, monkeypatch, no_loading):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plan, out = _plan(capsys, ["--demo", "--dry_run"])
    assert plan["demo"] == "True" and NOTICE in out


def test_s2v_plan_counts_the_clips_of_the_speech(capsys, tmp_path, monkeypatch, no_loading):
    import numpy as np

    from wan_runtime.audio_io import write_wav

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    speech = write_wav(np.full(3 * 16000, 0.1, np.float32), tmp_path / "three.wav")
    argv = ["--demo", "--task", "s2v-14B", "--audio", str(speech), "--dry_run"]
    plan, _ = _plan(capsys, argv)
    # 6 clips of 8 frames, the first clip's first 3 dropped: 45 frames, within the speech's 48.
    speech = "the speech lasts 3.00 s"
    assert plan["frame_num"] == f"6 clips of 8 frames: 45 frames, the MP4 45 of them (2.81 s; {speech})"
    plan, _ = _plan(capsys, [*argv, "--num_clip", "2"])
    assert plan["frame_num"] == ("2 clips of 8 frames (--num_clip 2 of the 6 the speech starts): 13 frames, "
                                 f"the MP4 13 of them (0.81 s; {speech})")
    plan, _ = _plan(capsys, [*argv, "--start_from_ref"])
    assert plan["frame_num"].startswith("6 clips of 8 frames: 48 frames, the MP4 48 of them (3.00 s;")


def test_a_lora_that_does_not_fit_fails_the_dry_run(ti2v_root, tmp_path, capsys, no_loading):
    lora = tmp_path / "wide.safetensors"
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.ones(2, 8),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.ones(8, 2)}, str(lora))
    assert main(["--ckpt_dir", str(ti2v_root), "--dry_run", "--lora", str(lora)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: LoRA file") and "does not fit the ti2v-5B DiT" in line


def _job(*argv: str):
    from wan_runtime.batch_file import resolve_jobs
    from wan_runtime.cli_parser import build_parser

    parser = build_parser()
    [job] = resolve_jobs(parser, parser.parse_args(list(argv)))
    return job


def test_a_video_larger_than_the_gpu_is_warned_of_with_what_lowers_it(ti2v_root, monkeypatch):
    from types import SimpleNamespace

    from tests.pipelines.test_memory_plan import plan as cuda_plan
    from wan_runtime.generate import _peak_memory

    weights = cuda_plan("ti2v-5B", ti2v_root)
    job = _job("--ckpt_dir", str(ti2v_root), "--frame_num", "9")
    size = (1280, 704)

    def gpu_of(capacity: int) -> None:
        properties = SimpleNamespace(total_memory=capacity)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: properties)

    gpu_of(2**40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = _peak_memory(job, size, weights, {})
    assert line.startswith("the video takes at least ") and " GiB of cuda memory at the peak, in the " in line
    gpu_of(2**20)
    warning = (r"this video will run out of GPU memory: it takes at least .* more than the 0\.00 GiB the GPU "
               r"has; to fit, try --vae_tiling \(the VAE decodes in tiles")
    with pytest.warns(UserWarning, match=warning):
        _peak_memory(job, size, weights, {})


def test_under_torchrun_the_peak_is_each_processs(ti2v_root, monkeypatch):
    from types import SimpleNamespace

    from tests.pipelines.test_memory_plan import plan as cuda_plan
    from wan_runtime.distributed.launch import Launch
    from wan_runtime.generate import _peak_memory

    big = SimpleNamespace(total_memory=2**40)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: big)
    weights = cuda_plan("ti2v-5B", ti2v_root, world=2, dit_fsdp=True, t5_fsdp=True)
    job = dataclasses.replace(_job("--ckpt_dir", str(ti2v_root), "--frame_num", "9"),
                              launch=Launch(rank=0, world=2), ulysses_size=2, dit_fsdp=True, t5_fsdp=True)
    estimates = {}
    line = _peak_memory(job, (1280, 704), weights, estimates)
    (estimate,) = estimates.values()
    assert line == f"the video takes in each process {estimate.describe()}"
    one = {}
    _peak_memory(dataclasses.replace(job, ulysses_size=1), (1280, 704), weights, one)
    (whole,) = one.values()
    denoise = [[s.activations for s in e.stages if s.stage == "denoise"] for e in (estimate, whole)]
    assert denoise[0] < denoise[1]


def test_an_estimate_that_fails_is_told_and_costs_no_video(ti2v_root, monkeypatch):
    from tests.pipelines.test_memory_plan import plan as cuda_plan
    from wan_runtime import pipelines
    from wan_runtime.generate import _peak_memory

    def broken(*args):
        raise RuntimeError("an op the meta device lacks\nsecond line")

    monkeypatch.setattr(pipelines, "estimate_memory", broken)
    line = _peak_memory(_job("--ckpt_dir", str(ti2v_root)), (1280, 704), cuda_plan("ti2v-5B", ti2v_root), {})
    assert line == ("the video's peak could not be worked out (RuntimeError: an op the meta device lacks "
                    "second line)")



def test_the_plan_says_when_the_cpu_memory_goes_unchecked(ti2v_root, monkeypatch, capsys, no_loading):
    monkeypatch.setenv("WAN_HOST_MEMORY_CHECK", "0")
    _, out = _plan(capsys, ["--ckpt_dir", str(ti2v_root), "--dry_run", "--device", "cpu"])
    assert out[-1].startswith("memory: the weights take ") and out[-1].endswith(
        " (not checked: WAN_HOST_MEMORY_CHECK=0)"), out[-1]
