"""Argument parsing and validation: official defaults, and every bad input refused with one line,
exit 2 and no traceback, before any model is imported."""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.cli.helpers import run_module
from tests.pipelines.images import write_pose_video
from wan_runtime.cli_args import EXAMPLE_PROMPT, resolve
from wan_runtime.cli_parser import build_parser, str2bool
from wan_runtime.demo import DEMO_SETTINGS
from wan_runtime.generate import main
from wan_runtime.pipelines import check_output_size
from wan_runtime.tasks import TASKS
from wan_runtime.tiny_checkpoints import write_task_checkpoint
from wan_runtime.video_output import default_save_file

pytestmark = pytest.mark.usefixtures("no_pipelines")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Complete tiny checkpoint folders of both tasks, shared by the module."""
    return {task: write_task_checkpoint(task, tmp_path_factory.mktemp(task)) for task in TASKS}


def _errors(capsys, argv: list[str]) -> list[str]:
    """Run the CLI in-process on ``argv``; it must exit 2 with only ``error:`` lines."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), captured.err
    return lines


def _resolve(*argv: str):
    return resolve(build_parser().parse_args(list(argv)))


def test_official_defaults(roots):
    config = _resolve("--ckpt_dir", str(roots["ti2v-5B"]))
    spec = TASKS["ti2v-5B"]
    assert (config.task, config.size, config.frame_num, config.sample_steps) == (
        "ti2v-5B", spec.default_size, spec.frame_num, spec.sampling_steps
    )
    assert (config.sample_shift, config.sample_guide_scale) == (spec.shift, spec.guide_scale)
    assert (config.sample_solver, config.base_seed, config.prompt) == ("unipc", -1, EXAMPLE_PROMPT["ti2v-5B"])
    # The official script run as a single process offloads by default.
    assert config.offload_model is True
    assert (config.t5_cpu, config.convert_model_dtype, config.image, config.save_file) == (
        False, False, None, None
    )
    assert config.dtype == torch.bfloat16
    assert config.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_i2v_keeps_the_official_size_and_guide_scales(roots, image):
    config = _resolve("--task", "i2v-A14B", "--ckpt_dir", str(roots["i2v-A14B"]), "--image", str(image))
    assert config.size == "1280*720"
    assert config.sample_guide_scale == (3.5, 3.5)
    assert config.image.load().mode == "RGB" and (config.image.width, config.image.height) == (64, 48)


def test_given_values_are_kept(roots, tmp_path):
    with pytest.warns(UserWarning, match="--t5_cpu changes nothing on the CPU"):
        config = _resolve(
            "--ckpt_dir", str(roots["ti2v-5B"]), "--size", "704*1280", "--frame_num", "9",
            "--sample_steps", "3", "--sample_shift", "3", "--sample_guide_scale", "0", "--sample_solver",
            "dpm++", "--base_seed", "7", "--prompt", "a cat", "--offload_model", "False", "--t5_cpu",
            "--convert_model_dtype", "--device", "cpu", "--dtype", "float32",
            "--save_file", str(tmp_path / "out.mp4"),
        )
    assert (config.size, config.frame_num, config.sample_steps) == ("704*1280", 9, 3)
    assert config.sample_shift == 3.0
    assert (config.sample_guide_scale, config.sample_solver, config.base_seed) == (0.0, "dpm++", 7)
    assert (config.prompt, config.offload_model, config.t5_cpu, config.convert_model_dtype) == (
        "a cat", False, True, True
    )
    assert (config.device, config.dtype, config.save_file) == ("cpu", torch.float32, tmp_path / "out.mp4")


def test_demo_defaults():
    config = _resolve("--demo", "--task", "i2v-A14B")
    assert (config.ckpt_dir, config.size, config.frame_num, config.sample_steps) == (
        None, DEMO_SETTINGS.default_size, DEMO_SETTINGS.frame_num, DEMO_SETTINGS.sampling_steps
    )
    assert (config.device, config.dtype) == ("cpu", torch.float32)
    assert config.image is not None  # the built-in image


def test_help_says_what_each_task_needs_and_how_it_differs_from_the_official_script(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag: no phrase is cut by wrapping
    text = build_parser().format_help()
    d = DEMO_SETTINGS
    for words in [
        "speech-to-video (speech and a reference image) with s2v-14B",
        "--image IMAGE input image: required for i2v-A14B (the first frame) and s2v-14B",
        "s2v-14B ignores it, with a warning: its video follows the audio",
        f"--demo: {d.default_size})", f"(default: the task's; --demo: {d.sampling_steps})",
        f"(default bfloat16; --demo: {d.dtype})", f"else cpu; --demo: {d.device})",
        f"a multiple of 4 from 4 to 4096 (default 80; --demo: {d.infer_frames})",
        "--task defaults to ti2v-5B (the official default, t2v-A14B, is not served)",
        "1280*720 for i2v-A14B, 1280*704 for ti2v-5B, 1280*720 for s2v-14B; the official default is "
        "1280*720 for every task",
        "i2v-A14B and s2v-14B require --image and s2v-14B requires --audio (the official script falls back "
        "to its example files",
    ]:
        assert words in " ".join(text.split()), words


@pytest.mark.parametrize("value, expected", [("yes", True), ("T", True), ("1", True), ("no", False),
                                             ("False", False), ("0", False)])
def test_str2bool_is_the_official(value, expected):
    assert str2bool(value) is expected


def test_default_save_file_is_the_official_name():
    name = default_save_file("ti2v-5B", "1280*704", "a cat / dog " + "x" * 60, datetime(2025, 7, 28, 9, 5, 1))
    size = "1280x704" if sys.platform == "win32" else "1280*704"
    assert name == Path(f"ti2v-5B_{size}_1_a_cat___dog_{'x' * 38}_20250728_090501.mp4")
    # The official name's third field is the sequence-parallel size.
    assert default_save_file("ti2v-5B", "1280*704", "cat", datetime(2025, 7, 28), ulysses_size=8).name \
        == f"ti2v-5B_{size}_8_cat_20250728_000000.mp4"
    # A prompt's line breaks and tabs, which the official name keeps, are made _ as its spaces.
    assert default_save_file("ti2v-5B", "1280*704", "a cat\nat night\t\x7f", datetime(2025, 7, 28)).name \
        == f"ti2v-5B_{size}_1_a_cat_at_night___20250728_000000.mp4"


# (argv after the checkpoint arguments, task, expected words in the single error line)
BAD_INPUTS = {
    "unknown task": (["--task", "t2v-A14B", "--demo"], None, ["unknown task 't2v-A14B'", "ti2v-5B"]),
    "unsupported size": (["--size", "1280*720"], "ti2v-5B",
                         ["size 1280*720 is not supported by ti2v-5B", "704*1280, 1280*704"]),
    "bad demo size": (["--demo", "--size", "100*96"], None, ["multiples of 32"]),
    "size with an x": (["--size", "1280x704"], "ti2v-5B",
                       ["size 1280x704 is not supported", "sizes are written with a '*': 1280*704"]),
    "demo size with an x": (["--demo", "--size", "128 X 96"], None,
                            ["got '128 X 96'; sizes are written with a '*': 128*96"]),
    "frame_num not 4n+1": (["--frame_num", "8"], "ti2v-5B", ["--frame_num", "4n+1", "got 8"]),
    "vae tile size": (["--vae_tiling", "100"], "ti2v-5B",
                      ["--vae_tiling must be a tile size in pixels, a multiple of 64 (e.g. 512", "got 100"]),
    "frame_num below 1": (["--frame_num", "-3"], "ti2v-5B", ["--frame_num", "4n+1 from 1 to", "got -3"]),
    "frame_num past the position tables": (["--frame_num", "4097"], "ti2v-5B",
                                           ["--frame_num must be 4n+1 from 1 to 4093 (1, 5, 9, ..., 121)"]),
    "seed past 2**64 - 1": (["--base_seed", str(2**64)], "ti2v-5B",
                            ["--base_seed must be an integer at most 2**64"]),
    "nan guide scale": (["--sample_guide_scale", "nan"], "ti2v-5B", ["--sample_guide_scale", "finite"]),
    "infinite shift": (["--sample_shift", "inf"], "ti2v-5B", ["--sample_shift must be a finite number > 0"]),
    "idle cache flag": (["--fb_thresh", "0.2"], "ti2v-5B", ["--fb_thresh has no effect without --fbcache"]),
    "idle teacache flag": (["--fbcache", "--teacache_alternating"], "ti2v-5B",
                           ["--teacache_alternating has no effect without --teacache"]),
    "ulysses without torchrun": (["--ulysses_size", "2"], "ti2v-5B",
                                 ["--ulysses_size 2 splits each DiT forward over 2 processes but this launch "
                                  "has 1", "torchrun --nproc_per_node 2"]),
    "ulysses zero": (["--ulysses_size", "0"], "ti2v-5B", ["--ulysses_size must be a positive number"]),
    "dit fsdp without torchrun": (["--dit_fsdp", "--offload_model", "False"], "ti2v-5B",
                                  ["--dit_fsdp shards weights", "this run is one process"]),
    "t5 fsdp without torchrun": (["--t5_fsdp"], "ti2v-5B", ["--t5_fsdp shards weights", "drop --t5_fsdp"]),
    "prompt extension": (["--use_prompt_extend"], "ti2v-5B", ["--use_prompt_extend: prompt extension"]),
    "animate": (["--src_root_path", "process_results"], "ti2v-5B",
                ["--src_root_path: the animate-14B task is not served"]),
    "animate reference frames": (["--refert_num", "5"], "ti2v-5B", ["--refert_num: the animate-14B task"]),
    "animate switch": (["--replace_flag"], "ti2v-5B", ["--replace_flag: the animate-14B task"]),
    "animate relighting": (["--use_relighting_lora"], "ti2v-5B", ["--use_relighting_lora: the animate-14B"]),
    "frame_num of ti2v": (["--frame_num", "3"], "ti2v-5B", ["from 1 to 4093 (1, 5, 9, ..., 121), got 3"]),
    "tts text": (["--tts_text", "hello"], "ti2v-5B", ["--tts_text: text-to-speech is out of scope"]),
    "i2v without image": ([], "i2v-A14B", ["pass --image"]),
    "missing image": (["--image", "/nonexistent/cat.png"], "ti2v-5B",
                      ["--image /nonexistent/cat.png does not exist"]),
    "negative steps": (["--sample_steps", "-3"], "ti2v-5B", ["--sample_steps", "got -3"]),
    "zero steps": (["--sample_steps", "0"], "ti2v-5B", ["--sample_steps", "got 0"]),
    "more steps than timesteps": (["--sample_steps", "1001"], "ti2v-5B",
                                  ["--sample_steps must be a number of steps from 1 to 1000", "got 1001"]),
    "negative guide scale": (["--sample_guide_scale", "-1"], "ti2v-5B", ["--sample_guide_scale", "-1.0"]),
    "non-positive shift": (["--sample_shift", "0"], "ti2v-5B", ["--sample_shift must be a finite", "got 0"]),
    "unknown solver": (["--sample_solver", "heun"], "ti2v-5B", ["'heun'", "unipc, dpm++, euler"]),
    "empty solver": (["--sample_solver", ""], "ti2v-5B", ["unknown --sample_solver ''"]),
    "save folder missing": (["--save_file", "/nonexistent/dir/out.mp4"], "ti2v-5B",
                            ["folder /nonexistent/dir does not exist; create it first"]),
    "save file not mp4": (["--save_file", "out.avi"], "ti2v-5B", ["must end in .mp4"]),
    "save file ending in a space": (["--save_file", "out.mp4 "], "ti2v-5B",
                                    ["--save_file 'out.mp4 ' must end"]),
    "save file a folder": (["--save_file", "/tmp"], "ti2v-5B",
                           ["--save_file /tmp is a folder; give a file name", "e.g. /tmp/video.mp4"]),
    "save file only a suffix": (["--save_file", ".mp4"], "ti2v-5B", ["--save_file .mp4 has no name before"]),
    "save file empty": (["--save_file", ""], "ti2v-5B", ["--save_file is empty"]),
    "save file name too long": (["--save_file", "a" * 252 + ".mp4"], "ti2v-5B", ["256 bytes", "at most 255"]),
    "image is a folder": (["--image", "/tmp"], "ti2v-5B", ["--image /tmp is a folder; pass the path of a"]),
    # A device cannot be read twice, nor can a pipe (a shell's <(...)), which --batch alone takes.
    **{f"{flag} a device": ([flag, "/dev/null"], "ti2v-5B",
                            [f"{flag} /dev/null is not a regular file (a pipe or a device, read more"])
       for flag in ("--image", "--batch", "--settings_from")},
    "lora a device": (["--lora", "/dev/null"], "ti2v-5B", ["LoRA file /dev/null is not a regular file"]),
    "unknown device": (["--device", "tpu"], "ti2v-5B", ["unknown --device 'tpu'"]),
    "unknown dtype": (["--dtype", "float16"], "ti2v-5B", ["unknown --dtype 'float16'"]),
    "negative stream_blocks": (["--stream_blocks", "-2"], "ti2v-5B",
                               ["--stream_blocks must be a number of blocks from 0", "got -2"]),
    "no checkpoint": ([], None, ["--ckpt_dir is required"]),
    "demo with checkpoint": (["--demo"], "ti2v-5B", ["--demo", "drop --ckpt_dir"]),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(name, roots, capsys):
    extra, ckpt_task, words = BAD_INPUTS[name]
    argv = ([] if ckpt_task is None else ["--task", ckpt_task, "--ckpt_dir", str(roots[ckpt_task])]) + extra
    [line] = _errors(capsys, argv)
    assert all(word in line for word in words), line


@pytest.mark.parametrize(("flags", "tile"), [([], 0), (["--vae_tiling"], 512), (["--vae_tiling", "128"], 128),
                                             (["--vae_tiling", "0"], 0)])
def test_vae_tiling_is_a_tile_size_or_none(roots, flags, tile):
    assert _resolve("--ckpt_dir", str(roots["ti2v-5B"]), *flags).vae_tiling == tile


def test_a_size_with_an_x_is_not_told_a_size_that_does_not_fit_either(roots, capsys):
    assert _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--size", "1920x1080"]) == [
        "error: size 1920x1080 is not supported by ti2v-5B; supported sizes: 704*1280, 1280*704; sizes are "
        "written with a '*'"]


def test_fp8_beside_fsdp_is_refused(roots, capsys):
    """Among the problems of a one-process --dit_fsdp run."""
    lines = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--dit_fp8", "--dit_fsdp",
                             "--offload_model", "False"])
    assert any("--dit_fp8 and --dit_fsdp do not combine: FSDP shards the DiT weights" in line
               for line in lines), lines


@pytest.mark.parametrize("content", [b"not an image at all", None], ids=["garbage", "truncated"])
def test_unreadable_image(content, image, roots, capsys):
    data = image.read_bytes()
    image.write_bytes(content if content is not None else data[: len(data) // 2])
    [line] = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--image", str(image)])
    assert f"--image {image} cannot be read as an image" in line
    fix = "pass a PNG, JPEG or WebP file" if content else "this PNG file is likely damaged or cut short"
    assert fix in line


def test_incomplete_checkpoint_lists_every_missing_file(roots, tmp_path, image, capsys):
    broken = shutil.copytree(roots["i2v-A14B"], tmp_path / "ckpt")
    (broken / "Wan2.1_VAE.pth").unlink()
    shutil.rmtree(broken / "low_noise_model")
    [line] = _errors(capsys, ["--task", "i2v-A14B", "--ckpt_dir", str(broken), "--image", str(image)])
    assert "missing Wan2.1_VAE.pth, low_noise_model/config.json" in line


def test_tokenizer_folder_without_vocabulary_is_refused(roots, tmp_path, capsys):
    broken = shutil.copytree(roots["ti2v-5B"], tmp_path / "ckpt")
    (broken / "google" / "umt5-xxl" / "tokenizer.json").unlink()
    [line] = _errors(capsys, ["--ckpt_dir", str(broken)])
    assert "missing google/umt5-xxl/tokenizer.json or google/umt5-xxl/spiece.model" in line


def test_s2v_without_speech_encoder_weights_is_refused(roots, image, speech, tmp_path, capsys):
    broken = shutil.copytree(roots["s2v-14B"], tmp_path / "ckpt")
    (broken / "wav2vec2-large-xlsr-53-english" / "model.safetensors").unlink()
    argv = ["--task", "s2v-14B", "--ckpt_dir", str(broken), "--image", str(image), "--audio", str(speech)]
    [line] = _errors(capsys, argv)
    assert ("missing wav2vec2-large-xlsr-53-english/model.safetensors or "
            "wav2vec2-large-xlsr-53-english/pytorch_model.bin") in line


def test_missing_checkpoint_folder(capsys, tmp_path):
    [line] = _errors(capsys, ["--ckpt_dir", str(tmp_path / "nope")])
    assert f"checkpoint folder {tmp_path / 'nope'} does not exist" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_save_folder(roots, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    [line] = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--save_file", str(folder / "a.mp4")])
    assert f"folder {folder} is not writable" in line


@pytest.mark.parametrize("read_only", [True, False])
def test_a_folder_the_video_cannot_go_in_says_why(roots, tmp_path, capsys, monkeypatch, read_only):
    """As root finds a read-only mount, or another user a folder not theirs."""
    import wan_runtime.cli_args as cli_args

    real_access = os.access
    monkeypatch.setattr(cli_args.os, "access", lambda at, mode: at != tmp_path and real_access(at, mode))
    monkeypatch.setattr(cli_args, "_read_only", lambda folder: read_only)
    target = tmp_path / "a.mp4"
    [line] = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--save_file", str(target)])
    why = "on a read-only file system" if read_only else "not writable by this user (change its permissions)"
    assert line == (f"error: cannot write {target}: folder {tmp_path} is {why}; or give --save_file in "
                    "another folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(roots, capsys):
    [line] = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--device", "cuda"])
    assert "--device cuda: CUDA is not available" in line


@pytest.mark.parametrize(("flag", "choices"), [("--prompt_extend_method", "'dashscope', 'local_qwen'"),
                                               ("--prompt_extend_target_lang", "'zh', 'en'")])
def test_prompt_extension_values_are_the_official_choices(flag, choices, roots, capsys):
    for value in choices.replace("'", "").split(", "):
        assert _resolve("--ckpt_dir", str(roots["ti2v-5B"]), flag, value).task == "ti2v-5B"
    with pytest.raises(SystemExit) as exit_info:
        main([flag, "fr"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: argument {flag}: invalid choice: 'fr' (choose from {choices}) (see --help)\n"
    )


def test_malformed_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--frame_num", "nine"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: argument --frame_num: invalid int value: 'nine' (see --help)\n"


def test_an_unknown_flag_is_told_the_one_it_resembles(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--demo", "--seed", "5", "--frame-num=5", "--zzz"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: unrecognized arguments: --seed 5 --frame-num=5 --zzz; --seed: did you mean --base_seed?; "
        "--frame-num: did you mean --frame_num? (see --help)\n"
    )


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_run_time_failure_is_exit_1_and_one_line(debug, tmp_path, monkeypatch, capsys):
    # The demo cache cannot be created (its root is a file): a failure at run time, not bad input.
    blocker = tmp_path / "cache"
    blocker.write_text("a file")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    if debug:
        with pytest.raises(OSError):
            main(["--demo", "--debug"])
        return
    assert main(["--demo"]) == 1
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.endswith("(run with --debug for the traceback)") and str(blocker) in line


def _stub_loading(monkeypatch, load_pipeline) -> None:
    """The CLI's pipelines with ``load_pipeline`` in place of the real one (the sizes worked out
    before loading are the real ones)."""
    pipelines = SimpleNamespace(load_pipeline=load_pipeline, check_output_size=check_output_size)
    monkeypatch.setitem(sys.modules, "wan_runtime.pipelines", pipelines)


OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
       "1.25 GiB is free. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF")


@pytest.mark.parametrize(("flags", "advised", "not_advised"), [
    ([], ["--t5_cpu", ", --stream_blocks N (DiT blocks wait", "--dit_fp8 (DiT weights in 8-bit",
          "--vae_tiling (the VAE decodes", "smaller --size, fewer --frame_num"], ["--offload_model"]),
    (["--offload_model", "False", "--t5_cpu"], ["--offload_model True", "smaller --size"], ["--t5_cpu"]),
    (["--stream_blocks", "4"], ["more --stream_blocks"], ["--offload_model"]),
    (["--dit_fp8"], ["--stream_blocks", "smaller --size"], ["--dit_fp8"]),
    (["--vae_tiling", "256"], ["--dit_fp8", "smaller --size"], ["--vae_tiling"]),
    (["--dtype", "float32"], ["--dtype bfloat16 (half the bytes of float32)"], []),
], ids=["defaults", "no-offload", "streaming", "fp8", "tiled", "float32"])
def test_out_of_memory_is_one_line_naming_what_frees_memory(roots, monkeypatch, capsys, flags, advised,
                                                            not_advised):
    def generate(*args, **kwargs):
        raise torch.OutOfMemoryError(OOM)

    _stub_loading(monkeypatch, lambda **kwargs: SimpleNamespace(weight_plan=None, generate=generate))
    assert main(["--ckpt_dir", str(roots["ti2v-5B"]), *flags]) == 1
    # On a CPU-only machine --stream_blocks also warns that it changes nothing there.
    [line] = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert line.startswith("error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB; to fit")
    assert all(advice in line for advice in advised) and not any(flag in line for flag in not_advised)


def test_out_of_memory_while_loading_advises_on_the_weights_alone(roots, monkeypatch, capsys):
    def load_pipeline(**kwargs):
        raise torch.OutOfMemoryError(OOM)

    _stub_loading(monkeypatch, load_pipeline)
    assert main(["--ckpt_dir", str(roots["ti2v-5B"])]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: out of memory in the model loading stage: CUDA out of memory. Tried to "
                           "allocate 2.00 GiB; to fit, try --t5_cpu (")
    assert "--dit_fp8" in line and "--vae_tiling" not in line and "--size" not in line
    from wan_runtime.generate import LOADING, _memory_remedy

    sharded = SimpleNamespace(fit_memory=None, offload_model=False, dit_fsdp=True, t5_fsdp=True, t5_cpu=False,
                              stream_blocks=None, dit_fp8=False, vae_tiling=0, task="ti2v-5B", dtype=None,
                              convert_model_dtype=False, ulysses_size=1, cuda_graphs=False)
    assert _memory_remedy(sharded, None, LOADING).startswith("no flag lowers the weights further")
    # In the steps the graphs' copies can go; blocks stream once the graphs have gone.
    graphed = SimpleNamespace(**vars(sharded) | {"dit_fsdp": False, "t5_fsdp": False, "cuda_graphs": True})
    streamed = "then --stream_blocks N (DiT blocks wait in CPU memory until they run)"
    copies = "--no-cuda_graphs (the DiT blocks' graphs keep copies of their input and output)"
    assert f"{copies}, {streamed}" in _memory_remedy(graphed, None, "denoise")
    advice = _memory_remedy(graphed, None, LOADING)  # the graphs' copies are no weights
    assert f"--no-cuda_graphs, {streamed}" in advice and advice.count("cuda_graphs") == 1
    # In the decode, tiles half as wide.
    tiled = SimpleNamespace(**vars(sharded) | {"vae_tiling": 256})
    smaller = "--vae_tiling 128 (smaller tiles), smaller --size, fewer --frame_num"
    assert _memory_remedy(tiled, None, "vae_decode") == f"to fit, try {smaller}"


def test_out_of_memory_advice_streams_no_more_than_every_block_but_the_first(roots):
    from wan_runtime.generate import _memory_remedy

    argv = ["--ckpt_dir", str(roots["ti2v-5B"]), "--stream_blocks", "29"]
    with pytest.warns(UserWarning, match="--stream_blocks changes nothing on the CPU"):
        args, config = build_parser().parse_args(argv), _resolve(*argv)
    assert "more --stream_blocks" in _memory_remedy(args, config, "denoise", most_streamed=None)
    assert "--stream_blocks" not in _memory_remedy(args, config, "denoise", most_streamed=29)


@pytest.mark.parametrize("compiled", [True, False], ids=["compile", "eager"])
def test_compiler_failure_is_one_line_suggesting_eager(roots, monkeypatch, capsys, compiled):
    """A torch.compile failure (a report of many lines) is its first line and the way out; the same
    exception type without --compile is reported as any other failure."""
    given = {}

    def load_pipeline(*args, **kwargs):
        given.update(kwargs)
        raise torch._dynamo.exc.TorchRuntimeError("Dynamo failed to run FX node\n  pages of graph\n  more")

    _stub_loading(monkeypatch, load_pipeline)
    assert main(["--ckpt_dir", str(roots["ti2v-5B"]), *(["--compile"] if compiled else [])]) == 1
    assert given["compile"] is compiled
    [line] = capsys.readouterr().err.splitlines()
    if compiled:
        assert line == ("error: torch.compile failed: TorchRuntimeError: Dynamo failed to run FX node; "
                        "run without --compile (or with --debug for the traceback)")
    else:
        assert line.startswith("error: TorchRuntimeError: Dynamo failed to run FX node pages of graph more")


def test_all_problems_listed_by_the_module_without_traceback(tmp_path):
    result = run_module(
        "wan_runtime.generate", "--task", "i2v-A14B", "--ckpt_dir", str(tmp_path / "nope"), "--size", "64*64",
        "--frame_num", "6", "--sample_steps", "-1", "--sample_guide_scale", "-2", "--save_file",
        str(tmp_path / "missing" / "out.mp4"),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    for words in ["does not exist; pass the folder", "size 64*64 is not supported", "--frame_num",
                  "pass --image", "--sample_steps", "--sample_guide_scale", "missing does not exist"]:
        assert sum(words in line for line in lines) == 1, (words, lines)
    assert len(lines) == 7



@pytest.fixture
def speech(tmp_path):
    """One second of a 16 kHz tone as a WAV file."""
    from wan_runtime.audio_io import write_wav

    t = np.arange(16000) / 16000
    return write_wav((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), tmp_path / "speech.wav")


S2V_BAD_INPUTS = {
    "no audio": ([], ["s2v-14B is driven by speech: pass --audio"]),
    "missing audio": (["--audio", "/nonexistent/talk.wav"], ["--audio /nonexistent/talk.wav does not exist"]),
    "empty paths": (["--audio", "", "--image", "", "--pose_video", ""],
                    ["--audio is empty; pass a WAV", "--image is empty; pass the path of a PNG",
                     "--pose_video is empty; pass an MP4"]),
    "undecodable audio": (["--audio", "GARBAGE"], ["cannot be decoded by ffmpeg"]),
    "too short audio": (["--audio", "SHORT"], ["too short"]),
    "infer_frames not 4n": (["--infer_frames", "6"], ["--infer_frames", "multiple of 4", "got 6"]),
    "zero infer_frames": (["--infer_frames", "0"], ["--infer_frames", "got 0"]),
    "infer_frames past the official limit": (["--infer_frames", "4100"],
                                             ["--infer_frames must be a multiple of 4 from 4 to 4096"]),
    # One second of speech starts 4 clips of 4 frames, seeded base_seed + 0 ... base_seed + 3.
    "seed too large for the clips": (["--infer_frames", "4", "--base_seed", str(2**64 - 1)],
                                     [f"--base_seed {2**64 - 1} is too large for 4 clips", "2**64 - 4"]),
    "zero clips": (["--num_clip", "0"], ["--num_clip", "got 0"]),
    "missing pose video": (["--pose_video", "/nonexistent/pose.mp4"],
                           ["--pose_video /nonexistent/pose.mp4 does not exist"]),
    "undecodable pose video": (["--pose_video", "BADPOSE"], ["--pose_video", "cannot be decoded by ffmpeg"]),
    "tts": (["--enable_tts"], ["--enable_tts", "out of scope"]),
    "unsupported size": (["--size", "1024*1024"], ["size 1024*1024 is not supported by s2v-14B"]),
}


@pytest.mark.parametrize("name", list(S2V_BAD_INPUTS))
def test_s2v_bad_input_gives_one_line_and_exit_2(name, roots, image, speech, tmp_path, capsys):
    from wan_runtime.audio_io import write_wav

    extra, words = S2V_BAD_INPUTS[name]
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not really a wave file")
    (tmp_path / "pose.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but no video")
    files = {"GARBAGE": str(tmp_path / "garbage.wav"), "BADPOSE": str(tmp_path / "pose.mp4"),
             "SHORT": str(write_wav(np.zeros(300, np.float32), tmp_path / "short.wav"))}
    argv = ["--task", "s2v-14B", "--ckpt_dir", str(roots["s2v-14B"]), "--image", str(image)]
    if name != "no audio" and "--audio" not in extra:
        argv += ["--audio", str(speech)]
    argv += [files.get(value, value) for value in extra]
    lines = _errors(capsys, argv)
    assert len(lines) == len(words) if name == "empty paths" else len(lines) == 1, lines
    assert all(any(word in line for line in lines) for word in words), lines


def test_s2v_flags_are_refused_for_other_tasks(roots, capsys):
    lines = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--infer_frames", "8", "--start_from_ref"])
    assert lines == ["error: --infer_frames is for --task s2v-14B only",
                     "error: --start_from_ref is for --task s2v-14B only"]
    # Text-to-speech is for no task: said first, so that switching the task does not meet it next.
    lines = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--enable_tts", "--tts_text", "hi"])
    assert lines == ["error: --enable_tts: text-to-speech is out of scope of wan_runtime; record or "
                     "synthesise the speech elsewhere and pass it with --audio (to --task s2v-14B)"]


def test_s2v_official_defaults(roots, image, speech):
    config = _resolve("--task", "s2v-14B", "--ckpt_dir", str(roots["s2v-14B"]), "--image", str(image),
                      "--audio", str(speech))
    spec = TASKS["s2v-14B"]
    assert (config.size, config.sample_steps, config.sample_shift, config.sample_guide_scale) == (
        "1280*720", 40, 3.0, 4.5
    )
    assert (config.infer_frames, config.num_clip, config.start_from_ref) == (80, None, False)
    assert config.audio_path == speech and config.audio.shape == (16000,)
    assert config.prompt == EXAMPLE_PROMPT["s2v-14B"] and spec.negative_prompt.startswith("画面模糊")
    assert config.pose_video is None


def test_s2v_ignores_frame_num_with_a_warning_as_the_official_script(roots, image, speech, capsys):
    argv = ["--task", "s2v-14B", "--ckpt_dir", str(roots["s2v-14B"]), "--image", str(image), "--audio",
            str(speech), "--frame_num", "6"]
    with pytest.warns(UserWarning, match="--frame_num is ignored by s2v-14B"):
        assert _resolve(*argv).frame_num == TASKS["s2v-14B"].frame_num
    # Validation passes; the run then fails to import the (blocked) pipelines: exit 1.
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --frame_num is ignored by s2v-14B: the video follows the audio's length, --infer_frames "
        "frames per clip (at most --num_clip clips)"
    )


@pytest.mark.parametrize(("seed", "num_clip"), [(2**64 - 4, None), (2**64 - 1, 1)])
def test_s2v_seed_that_fits_every_clip_is_accepted(roots, image, speech, seed, num_clip):
    clips = [] if num_clip is None else ["--num_clip", str(num_clip)]
    config = _resolve("--task", "s2v-14B", "--ckpt_dir", str(roots["s2v-14B"]), "--image", str(image),
                      "--audio", str(speech), "--infer_frames", "4", "--base_seed", str(seed), *clips)
    assert (config.base_seed, config.infer_frames) == (seed, 4)


def test_s2v_pose_video_is_checked_and_kept(roots, image, speech, tmp_path):
    pose = write_pose_video(tmp_path / "pose.mp4", 32, 48, frames=3, fps=24)
    config = _resolve("--task", "s2v-14B", "--ckpt_dir", str(roots["s2v-14B"]), "--image", str(image),
                      "--audio", str(speech), "--pose_video", str(pose))
    assert config.pose_video == pose


def test_save_file_inside_a_file_says_so(roots, tmp_path, capsys):
    blocker = tmp_path / "file.mp4"
    blocker.write_bytes(b"")
    [line] = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--save_file", str(blocker / "x.mp4")])
    assert line == f"error: cannot write {blocker / 'x.mp4'}: {blocker} is a file, not a folder"


def test_checkpoint_folder_that_is_a_file_says_so(tmp_path, capsys):
    blocker = tmp_path / "Wan2.2-TI2V-5B"
    blocker.write_bytes(b"")
    [line] = _errors(capsys, ["--ckpt_dir", str(blocker)])
    assert f"checkpoint folder {blocker} is a file, not a folder" in line


def test_official_defaults_spelled_out_are_accepted(roots):
    """A script that spells out the official defaults of the flags of features not served runs."""
    config = _resolve("--ckpt_dir", str(roots["ti2v-5B"]), "--refert_num", "77", "--ulysses_size", "1",
                      "--prompt_extend_method", "local_qwen", "--prompt_extend_target_lang", "zh")
    assert config.task == "ti2v-5B"


def test_one_frame_is_accepted_as_by_the_official_script(roots):
    assert _resolve("--ckpt_dir", str(roots["ti2v-5B"]), "--frame_num", "1").frame_num == 1


def test_cuda_graphs_on_the_cpu_is_refused(roots, capsys):
    lines = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--device", "cpu", "--cuda_graphs"])
    assert lines == ["error: --cuda_graphs needs a CUDA device, not cpu; run without it"]



def test_save_file_naming_a_folder_ending_in_mp4_says_so(roots, tmp_path, capsys):
    folder = tmp_path / "out.mp4"
    folder.mkdir()
    [line] = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--save_file", str(folder)])
    assert line.endswith(f"--save_file {folder} is a folder; give a file name ending in .mp4, e.g. "
                         f"{folder / 'video.mp4'}")


def test_a_video_is_not_written_over_a_file_the_run_reads(roots, image, tmp_path, capsys):
    """Not even a renamed one: the input is the same file."""
    named_mp4 = tmp_path / "input.mp4"
    os.link(image, named_mp4)
    assert _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--image", str(image), "--save_file",
                            str(named_mp4)]) == [
        f"error: --save_file {named_mp4} is the --image file this run reads; give the video another name"]


def test_replacing_an_existing_video_is_warned_of_unless_kept(roots, tmp_path):
    existing = tmp_path / "old.mp4"
    existing.write_bytes(b"an earlier video")
    argv = ["--ckpt_dir", str(roots["ti2v-5B"]), "--save_file", str(existing)]
    with pytest.warns(UserWarning, match=f"--save_file {existing} exists; this run replaces it "
                                         r"\(--skip_existing keeps it\)"):
        _resolve(*argv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _resolve(*argv, "--skip_existing")


def test_placement_flags_that_move_nothing_on_the_cpu_are_told(roots):
    argv = ["--ckpt_dir", str(roots["ti2v-5B"]), "--device", "cpu"]
    with pytest.warns(UserWarning, match="^--offload_model True and --t5_cpu change nothing on the CPU, "
                                         "where every model already is in CPU memory$"):
        _resolve(*argv, "--offload_model", "True", "--t5_cpu")
    with warnings.catch_warnings():  # the defaults, and turning them off, say nothing
        warnings.simplefilter("error")
        _resolve(*argv, "--offload_model", "False", "--no-t5_cpu")
