"""``--settings_from VIDEO``: the flags a video records make it again, the command line changes
what it gives (a group of flags, or another task's settings, as a whole), and a video without
readable settings is refused in one line before anything loads."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import warnings

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.helpers import launch_env, read_settings, read_video
from tests.lora.lora_writers import parameter_shapes, random_lora, write_official
from wan_runtime import __version__, demo, generate
from wan_runtime.batch_file import resolve_jobs
from wan_runtime.cli_args import EXAMPLE_PROMPT, InvalidArguments, resolve
from wan_runtime.cli_parser import build_parser
from wan_runtime.errors import InputError
from wan_runtime.input_digests import INPUTS_KEY, input_digests
from wan_runtime.lora import LoraFile
from wan_runtime.video_io import read_mp4_settings, write_mp4
from wan_runtime.video_settings import FLAGS_KEY, VideoSettings, command_line, recorded_flags, run_setup

FAST = ["--demo", "--frame_num", "5", "--sample_steps", "2"]
SOFTWARE = f"wan_runtime {__version__}"


def _video(path, settings: dict) -> object:
    """A tiny MP4 storing ``settings``, as the command line writes its videos."""
    return write_mp4(torch.zeros(3, 1, 16, 16), path, fps=16, metadata=settings)


def _recording(path, *argv: str, seed: int = 11) -> dict:
    """A video storing the flags of the command line ``argv`` (run with ``seed``); those flags."""
    flags = recorded_flags(resolve(build_parser().parse_args(list(argv))), seed)
    _video(path, {"software": SOFTWARE, FLAGS_KEY: flags})
    return flags


def _take(*argv: str):
    """The arguments ``argv`` gives with its ``--settings_from`` video's flags filled in; prints
    the notice a run prints."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    video = VideoSettings.read(parser, args.settings_from, list(argv))
    filled, taken = video.fill(args)
    print(video.notice(filled, taken))
    return filled


def _problems(*argv: str) -> list[str]:
    with pytest.raises(InvalidArguments) as caught:
        _take(*argv)
    return caught.value.problems


@pytest.fixture(scope="module")
def i2v_demo(tmp_path_factory):
    """The demo's i2v-A14B checkpoint folder, which the LoRAs below fit."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        return demo.demo_checkpoint("i2v-A14B")[0]


@pytest.fixture(scope="module")
def lora(i2v_demo, tmp_path_factory):
    """A LoRA that fits every DiT of the demo's i2v-A14B checkpoint."""
    shapes = parameter_shapes(i2v_demo / "high_noise_model")
    return write_official(tmp_path_factory.mktemp("lora") / "style.safetensors", random_lora(shapes))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:duration=1", str(path)], check=True)
    return path


@pytest.mark.parametrize("kind", ["ti2v", "i2v", "s2v"])
def test_the_recorded_flags_make_the_same_settings(tmp_path, image, lora, speech, kind):
    """Every setting a video records comes back as it was: the flags recorded again from the
    settings taken are the video's."""
    argv = {
        "ti2v": [*FAST, "--prompt", "a fox; = # \\ \n two", "--negative_prompt", "blurry", "--fbcache",
                 "--fb_thresh", "0.2", "--fb_cfg_sep_diff", "false", "--dtype", "bfloat16"],
        "i2v": [*FAST, "--task", "i2v-A14B", "--image", str(image), "--vae_tiling", "--lora", f"{lora}=0.3",
                "--lora_high_noise", str(lora), "--teacache", "--teacache_thresh", "0.15",
                "--sample_guide_scale", "4.5", "--dit_fp8", "--convert_model_dtype"],
        "s2v": ["--demo", "--task", "s2v-14B", "--audio", str(speech), "--num_clip", "2", "--infer_frames",
                "12", "--start_from_ref", "--image", str(image)],
    }[kind]
    flags = _recording(tmp_path / "a.mp4", *argv)
    taken = _take("--settings_from", str(tmp_path / "a.mp4"))
    assert recorded_flags(resolve(taken), 11) == flags
    assert flags["base_seed"] == 11 and flags["image"] == (None if kind == "ti2v" else str(image))


def test_a_default_seed_is_recorded_as_drawn_and_paths_as_absolute(tmp_path, image, monkeypatch):
    monkeypatch.chdir(image.parent)
    flags = _recording(tmp_path / "a.mp4", *FAST, "--task", "i2v-A14B", "--image", image.name, seed=123)
    assert flags["base_seed"] == 123 and flags["image"] == str(image)
    # i2v-A14B's default guidance, a scale per expert, is one for both: recorded, as its flag gives it.
    assert flags["sample_guide_scale"] == 3.5 and flags["negative_prompt"] is None


def test_the_command_line_keeps_what_it_gives(tmp_path, capsys):
    flags = _recording(tmp_path / "a.mp4", *FAST, "--prompt", "a fox", "--sample_shift", "3")
    args = _take("--settings_from", str(tmp_path / "a.mp4"), "--base_seed", "7", "--sample_steps", "3")
    again = recorded_flags(resolve(args), args.base_seed)
    assert again == {**flags, "base_seed": 7, "sample_steps": 3}
    out = capsys.readouterr().out
    assert out.startswith(f"settings from {tmp_path / 'a.mp4'}: --demo --prompt 'a fox' --size '128*96' ")
    assert out.endswith("; the command line's own: base_seed, sample_steps\n")


def test_the_printed_flags_give_what_was_taken(tmp_path, image, lora, capsys):
    """The printed command line, typed in, sets what the video's settings set."""
    _recording(tmp_path / "a.mp4", *FAST, "--task", "i2v-A14B", "--image", str(image), "--prompt",
               "it's 'quoted'", "--lora_high_noise", f"{lora}=0.25", "--fbcache")
    taken = _take("--settings_from", str(tmp_path / "a.mp4"))
    printed = capsys.readouterr().out.split(": ", 1)[1].rstrip("\n")
    typed = build_parser().parse_args(shlex.split(printed))
    assert recorded_flags(resolve(typed), typed.base_seed) == recorded_flags(resolve(taken), taken.base_seed)


@pytest.mark.parametrize(("recorded", "given", "expected"), [
    # One cache instead of the video's other, not beside it; --no-...: without the video's.
    (["--teacache", "--teacache_thresh", "0.2"], ["--fbcache"],
     {"fbcache": True, "teacache": None, "teacache_thresh": None}),
    (["--teacache", "--teacache_thresh", "0.2"], ["--no-teacache"],
     {"teacache": False, "teacache_thresh": None}),
    # A setting of the video's cache changes that setting alone.
    (["--fbcache", "--fb_thresh", "0.2"], ["--fb_downsample", "2"],
     {"fbcache": True, "fb_thresh": 0.2, "fb_downsample": 2}),
    # LoRAs: the command line's set, not the video's and more.
    (["--lora", "{lora}=0.5"], ["--lora", "{lora}=0.25"], {"lora": ["{lora}=0.25"]}),
    (["--task", "i2v-A14B", "--image", "{image}", "--lora_high_noise", "{lora}"], ["--lora", "{lora}"],
     {"lora_high_noise": [], "lora": ["{lora}"]}),
    # A Lightning folder brings its own sampling.
    (["--sample_solver", "dpm++", "--sample_shift", "3"], ["--lora_dir", "{folder}"],
     {"sample_solver": None, "sample_shift": None, "sample_steps": None, "frame_num": 5}),
    # A checkpoint folder replaces the demo, and the demo's sizes, frames, steps and dtype.
    ([], ["--ckpt_dir", "{folder}"], {"demo": False, "ckpt_dir": "{folder}", "frame_num": None, "size": None,
                                      "sample_steps": None, "dtype": None, "prompt": "a fox"}),
    ([], ["--demo"], {"demo": True, "frame_num": 5, "size": "128*96", "sample_steps": 2}),
    # --no-...: a setting the video has on, off; an empty value: the video's input left out.
    (["--dit_fp8", "--image", "{image}"], ["--no-dit_fp8", "--image", ""], {"dit_fp8": False, "image": None}),
    (["--lora", "{lora}"], ["--lora", ""], {"lora": []}),
])
def test_a_group_of_flags_is_replaced_as_a_whole(tmp_path, image, lora, recorded, given, expected):
    def filled(value):
        if isinstance(value, list):
            return [filled(item) for item in value]
        if isinstance(value, dict):
            return {key: filled(item) for key, item in value.items()}
        return value.format(lora=lora, image=image, folder=tmp_path) if isinstance(value, str) else value

    _recording(tmp_path / "a.mp4", *FAST, "--prompt", "a fox", *filled(recorded))
    args = _take("--settings_from", str(tmp_path / "a.mp4"), *filled(given))
    assert {key: getattr(args, key) for key in expected} == filled(expected)


def test_another_task_takes_the_prompts_seed_and_image_alone(tmp_path, image, capsys):
    _recording(tmp_path / "a.mp4", *FAST, "--prompt", "a fox", "--image", str(image), "--fbcache",
               "--sample_shift", "3")
    args = _take("--settings_from", str(tmp_path / "a.mp4"), "--task", "i2v-A14B")
    assert (args.task, args.prompt, args.base_seed, args.image, args.demo) == (
        "i2v-A14B", "a fox", 11, str(image), True)
    assert (args.size, args.frame_num, args.sample_steps, args.sample_shift, args.fbcache) == (
        None, None, None, None, None)
    config = resolve(args)  # the i2v demo's own defaults
    assert (config.size, config.frame_num) == (demo.DEMO_SETTINGS.default_size, demo.DEMO_SETTINGS.frame_num)
    out = capsys.readouterr().out
    assert out.endswith(
        "; the command line's own: task; left out with the settings the command line replaces: "
        "fb_cfg_sep_diff, fb_downsample, fb_ema, fb_last_steps, fb_metric, fb_thresh, fb_warmup, fbcache, "
        "frame_num, sample_guide_scale, sample_shift, sample_solver, sample_steps, size\n")


def _video_settings(path, *argv: str) -> VideoSettings:
    """The settings of the video at ``path`` for the command line ``--settings_from path argv``."""
    parser = build_parser()
    argv = ["--settings_from", str(path), *argv]
    return VideoSettings.read(parser, str(path), argv)


def _jobs(*argv: str):
    parser = build_parser()
    args = parser.parse_args(list(argv))
    return resolve_jobs(parser, args, VideoSettings.read(parser, args.settings_from, list(argv)))


def test_a_batch_line_sets_what_it_gives_over_the_video(tmp_path):
    """Over the video's flags as over the command line's, with the groups it gives replaced."""
    _recording(tmp_path / "a.mp4", *FAST, "--prompt", "a fox", "--fbcache", "--fb_thresh", "0.2")
    batch = tmp_path / "jobs.jsonl"
    lines = [{"base_seed": 1}, {"prompt": "a boat", "fb_downsample": 2}, {"fbcache": False},
             {"teacache": True}, {"image": None, "vae_tiling": 128}]
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    jobs = _jobs("--settings_from", str(tmp_path / "a.mp4"), "--batch", str(batch))
    first, second, uncached, tea, tiled = jobs
    assert (first.prompt, first.base_seed, first.frame_num, first.cache.fb_thresh) == ("a fox", 1, 5, 0.2)
    assert (second.prompt, second.base_seed, second.cache.fb_downsample, second.cache.fb_thresh) == (
        "a boat", 11, 2, 0.2)
    assert not uncached.cache.enabled
    assert tea.cache.teacache and not tea.cache.fbcache
    assert (tiled.vae_tiling, first.vae_tiling) == (128, 0)


@pytest.fixture(scope="module")
def lightning(i2v_demo, tmp_path_factory):
    """A Wan2.2-Lightning LoRA folder for the demo's i2v-A14B checkpoint."""
    folder = tmp_path_factory.mktemp("lightning")
    for seed, expert in enumerate(("high_noise", "low_noise")):
        write_official(folder / f"{expert}_model.safetensors", random_lora(
            parameter_shapes(i2v_demo / f"{expert}_model"), seed=seed, top=False, biases=False), prefix="")
    return folder


def test_a_lightning_folder_is_recorded_as_a_folder(tmp_path, image, lora, lightning, capsys):
    """Recorded as given, it merges again as it did; LoRAs given instead leave out its sampling
    too."""
    argv = ["--demo", "--task", "i2v-A14B", "--image", str(image), "--lora_dir", f"{lightning}=0.3"]
    flags = _recording(tmp_path / "a.mp4", *argv, "--lora_low_noise", f"{lora}=0.5")
    assert (flags["lora_dir"], flags["lora_low_noise"], flags["lora_high_noise"]) == (
        f"{lightning}=0.3", [f"{lora}=0.5"], [])
    assert (flags["sample_solver"], flags["sample_steps"]) == ("euler", 4)
    again = resolve(_take("--settings_from", str(tmp_path / "a.mp4")))
    assert again.loras == resolve(build_parser().parse_args(argv + ["--lora_low_noise", f"{lora}=0.5"])).loras
    other = _take("--settings_from", str(tmp_path / "a.mp4"), "--lora", str(lora))
    assert (other.lora_dir, other.lora_low_noise, other.lora, other.sample_solver, other.sample_steps) == (
        None, [], [str(lora)], None, None)
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        "; the command line's own: lora; left out with the settings the command line replaces: lora_dir, "
        "lora_low_noise, sample_guide_scale, sample_shift, sample_solver, sample_steps")


def test_a_problem_with_a_recorded_value_says_where_it_comes_from(tmp_path):
    image = tmp_path / "gone.png"
    Image.new("RGB", (32, 32)).save(image)
    _recording(tmp_path / "a.mp4", *FAST, "--image", str(image))
    image.unlink()
    with pytest.raises(InvalidArguments) as caught:
        _jobs("--settings_from", str(tmp_path / "a.mp4"))
    [line] = caught.value.problems
    assert line.startswith(f"--image {image} ") and line.endswith(
        f" (recorded in --settings_from {tmp_path / 'a.mp4'}; give the flag to replace it)")


def test_a_value_starting_with_a_dash_prints_joined_to_its_flag(tmp_path, capsys):
    _recording(tmp_path / "a.mp4", *FAST, "--prompt=-a fox", "--negative_prompt=--blurry")
    taken = _take("--settings_from", str(tmp_path / "a.mp4"))
    printed = capsys.readouterr().out.split(": ", 1)[1].rstrip("\n")
    assert "'--prompt=-a fox' --negative_prompt=--blurry" in printed
    typed = build_parser().parse_args(shlex.split(printed))
    assert (typed.prompt, typed.negative_prompt) == (taken.prompt, taken.negative_prompt)
    assert taken.prompt == "-a fox" and taken.negative_prompt == "--blurry"


def test_the_same_file_given_relative_is_no_change(tmp_path, image, monkeypatch, capsys):
    _recording(tmp_path / "a.mp4", *FAST, "--image", str(image))
    monkeypatch.chdir(image.parent)
    _take("--settings_from", str(tmp_path / "a.mp4"), "--image", image.name, "--base_seed", "3")
    assert capsys.readouterr().out.endswith("; the command line's own: base_seed\n")


@pytest.mark.parametrize(("stored", "words"), [
    ({"device": "cuda:0", "kernels": "cuda"},
     "was made with device cuda, kernels cuda, this run computes with device cpu, kernels "),
    ({"device": "cpu", "kernels": "no such"},
     "was made with kernels no such, this run computes with kernels "),
    ({"compile": True, "t5_cpu": True},
     "was made with compile True, t5_cpu True, this run computes with compile False, t5_cpu False"),
])
def test_another_setup_is_told(tmp_path, stored, words):
    flags = _recording(tmp_path / "a.mp4", *FAST)
    config = resolve(build_parser().parse_args(FAST))
    _video(tmp_path / "b.mp4", {"software": SOFTWARE, FLAGS_KEY: flags, **run_setup(config), **stored})
    with pytest.warns(UserWarning, match=f"{words}.*: the video will differ in its last bits"):
        _video_settings(tmp_path / "b.mp4").check_setup(config)
    _video(tmp_path / "c.mp4", {"software": SOFTWARE, FLAGS_KEY: flags, **run_setup(config)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _video_settings(tmp_path / "c.mp4").check_setup(config)


def test_the_example_prompt_is_each_tasks_own(tmp_path):
    flags = _recording(tmp_path / "a.mp4", *FAST)
    assert flags["prompt"] is None
    assert resolve(_take("--settings_from", str(tmp_path / "a.mp4"), "--task", "i2v-A14B")).prompt == (
        EXAMPLE_PROMPT["i2v-A14B"])
    assert resolve(_take("--settings_from", str(tmp_path / "a.mp4"))).prompt == EXAMPLE_PROMPT["ti2v-5B"]


def test_a_problem_of_the_command_lines_own_is_not_the_videos(tmp_path, image):
    """Its own image under the recorded image's folder; and a recorded task this version lacks
    is the video's."""
    _recording(tmp_path / "a.mp4", *FAST, "--image", str(image))
    with pytest.raises(InvalidArguments) as caught:
        _jobs("--settings_from", str(tmp_path / "a.mp4"), "--image", f"{image}.gone.png")
    [line] = caught.value.problems
    assert "gone.png" in line and "recorded in" not in line
    _video(tmp_path / "b.mp4", {"software": SOFTWARE, FLAGS_KEY: {"task": "t2v-A14B", "demo": True}})
    with pytest.raises(InvalidArguments) as caught:
        _jobs("--settings_from", str(tmp_path / "b.mp4"))
    [line] = caught.value.problems
    assert line.startswith("unknown task 't2v-A14B'") and line.endswith("give the flag to replace it)")


def test_a_cache_already_on_keeps_the_other(tmp_path):
    _recording(tmp_path / "a.mp4", *FAST, "--teacache", "--fbcache", "--fb_thresh", "0.2")
    args = _take("--settings_from", str(tmp_path / "a.mp4"), "--teacache")
    assert (args.teacache, args.fbcache, args.fb_thresh) == (True, True, 0.2)


def test_an_empty_lora_dir_keeps_the_sampling_of_a_video_without_one(tmp_path):
    _recording(tmp_path / "a.mp4", *FAST, "--sample_solver", "dpm++", "--sample_shift", "3")
    args = _take("--settings_from", str(tmp_path / "a.mp4"), "--lora_dir", "")
    assert (args.lora_dir, args.sample_solver, args.sample_shift) == (None, "dpm++", 3.0)


def test_an_empty_settings_from_is_refused():
    [line] = _problems("--settings_from", "")
    assert line == "--settings_from is empty; give an MP4 written by python -m wan_runtime.generate"


def test_a_video_of_another_version_is_taken_with_a_warning(tmp_path):
    flags = _recording(tmp_path / "a.mp4", *FAST)
    _video(tmp_path / "old.mp4", {"software": "wan_runtime 0.0.9", FLAGS_KEY: flags})
    with pytest.warns(UserWarning, match="made by wan_runtime 0.0.9, and this is wan_runtime .*: the same "):
        _take("--settings_from", str(tmp_path / "old.mp4"))


@pytest.mark.parametrize(("settings", "problem"), [
    ({"software": SOFTWARE}, "records no flags (it was made by an earlier wan_runtime"),
    ({"software": SOFTWARE, FLAGS_KEY: {}}, "its flags are not an object of flags with the task's"),
    ({"software": SOFTWARE, FLAGS_KEY: [1]}, "its flags are not an object of flags with the task's"),
    ({"software": SOFTWARE, FLAGS_KEY: {"task": None}}, "its flags are not an object of flags with the task"),
    ({"software": SOFTWARE, FLAGS_KEY: {"task": "ti2v-5B", "image": "a\0b.png"}},
     "image holds a NUL character, which no flag takes"),
    ({"software": "wan_runtime 9.0", FLAGS_KEY: {"task": "ti2v-5B", "motion": 1}},
     "'motion' is not a flag this version takes from a video (by wan_runtime 9.0; use that version)"),
    ({"software": SOFTWARE, FLAGS_KEY: {"task": "ti2v-5B", "base_seed": "seven"}},
     'base_seed must be a whole number, got "seven"'),
    ({"software": SOFTWARE, FLAGS_KEY: {"task": "ti2v-5B", "device": "cuda"}},
     "'device' is not a flag this version takes from a video"),
    ({"software": SOFTWARE, FLAGS_KEY: {"task": "ti2v-5B", "lora": "x.safetensors"}},
     "lora must be a list of strings"),
    ({"software": SOFTWARE, FLAGS_KEY: {"task": "ti2v-5B", "dit_fp8": 1}},
     "dit_fp8 must be true or false, got 1"),
])
def test_unusable_recorded_flags_are_named(tmp_path, settings, problem):
    _video(tmp_path / "a.mp4", settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # another version's
        [line] = _problems("--settings_from", str(tmp_path / "a.mp4"))
    assert line.startswith(f"--settings_from {tmp_path / 'a.mp4'}") and problem in line


def _ffmpeg_video(path, *metadata: str):
    """An MP4 written by ffmpeg itself, with ``metadata`` (``key=value``) as its tags."""
    tags = [word for tag in metadata for word in ("-metadata", tag)]
    source = ["-f", "lavfi", "-i", "color=s=16x16:d=0.1"]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", *source, *tags, "-metadata:s:v",
                    "comment=a stream's", str(path)], check=True)
    return path


def test_settings_are_read_as_any_writer_stores_them(tmp_path):
    """The comment tag's JSON, through every character ffmetadata escapes, and none of a stream's
    tags."""
    settings = {"software": SOFTWARE, "prompt": "a = b; # c \\ d\nnext line", "n": [1, 2.5, None]}
    path = _ffmpeg_video(tmp_path / "a.mp4", "title=x=y", f"comment={json.dumps(settings)}")
    assert read_mp4_settings(path) == settings
    assert read_mp4_settings(_video(tmp_path / "b.mp4", settings)) == settings


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: p, "does not exist; give an MP4 written by python -m wan_runtime.generate"),
    (lambda p: p.mkdir() or p, "is a folder"),
    (lambda p: p.write_text("not a video") and p, "cannot be read as a video (ffmpeg: "),
    (lambda p: _ffmpeg_video(p), "holds no wan_runtime settings (its comment tag is not ours)"),
    (lambda p: _ffmpeg_video(p, "comment={not json"), "holds no wan_runtime settings"),
    (lambda p: _ffmpeg_video(p, 'comment={"software": "other 1.0"}'), "holds no wan_runtime settings"),
    (lambda p: _ffmpeg_video(p, "comment=[1, 2]"), "holds no wan_runtime settings"),
])
def test_a_file_without_settings_is_refused(tmp_path, make, problem):
    path = make(tmp_path / "a.mp4")
    with pytest.raises(InputError, match="^video .*a.mp4 ") as caught:
        read_mp4_settings(path)
    assert problem in str(caught.value)


def test_a_file_without_settings_is_one_line_and_exit_2(tmp_path, no_pipelines, capsys):
    assert generate.main(["--settings_from", str(_ffmpeg_video(tmp_path / "a.mp4"))]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --settings_from ") and "holds no wan_runtime settings" in line


def test_command_line_leaves_defaults_out():
    actions = {action.dest: action for action in build_parser()._actions}
    assert command_line({"task": "ti2v-5B", "demo": False, "dit_fp8": True, "image": None, "lora": [],
                         "lora_low_noise": ["a=1.0", "b=0.5"], "sample_steps": 4}, actions) == [
        "--dit_fp8", "--lora_low_noise", "a=1.0", "--lora_low_noise", "b=0.5", "--sample_steps", "4"]


@pytest.fixture
def in_folder(tmp_path, monkeypatch):
    """Runs in ``tmp_path`` with the demo checkpoints cached there; returns the folder."""
    pytest.importorskip("wan_runtime.pipelines")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("task", ["ti2v-5B", "i2v-A14B", "s2v-14B"])
def test_a_video_is_made_again_from_its_settings(in_folder, image, lora, speech, task, capsys):
    """Frame for frame, with a seed drawn at random; and with another seed, the video that seed
    makes."""
    extra = {"ti2v-5B": ["--fbcache", "--fb_thresh", "0.3", "--negative_prompt", "blurry"],
             "i2v-A14B": ["--image", str(image), "--lora_high_noise", f"{lora}=0.5", "--teacache",
                          "--vae_tiling", "64"],
             "s2v-14B": ["--audio", str(speech), "--infer_frames", "8", "--num_clip", "2", "--size", "64*64",
                         "--image", str(image)]}[task]
    fast = ["--demo", "--sample_steps", "2", *(["--frame_num", "5"] if task != "s2v-14B" else [])]
    assert generate.main([*fast, "--task", task, *extra, "--save_file", "a.mp4"]) == 0
    if task == "i2v-A14B":  # what the LoRA changed, as loaded
        merged = re.search(r"^loras merged: (\d+) parameters of the high_noise DiT and 0 parameters of "
                           "the low_noise DiT changed$", capsys.readouterr().out, re.MULTILINE)
        changes = {"down", "diff", "diff_b", "diff_m", "up_b"}  # the factors' weight, the differences
        assert merged and int(merged[1]) == sum(len(changes & update.parts.keys())
                                                for update in LoraFile.read(lora).modules.values())
    assert generate.main(["--settings_from", "a.mp4", "--save_file", "again.mp4"]) == 0
    assert generate.main(["--settings_from", "a.mp4", "--base_seed", "5", "--save_file", "seed5.mp4"]) == 0
    assert generate.main([*fast, "--task", task, *extra, "--base_seed", "5", "--save_file", "b.mp4"]) == 0
    capsys.readouterr()
    frames = {name: read_video(in_folder / f"{name}.mp4")[0] for name in ("a", "again", "seed5", "b")}
    assert np.array_equal(frames["a"], frames["again"]) and np.array_equal(frames["seed5"], frames["b"])
    assert not np.array_equal(frames["a"], frames["b"])
    settings = {name: read_settings(in_folder / f"{name}.mp4") for name in ("a", "again", "b")}
    assert settings["a"] == settings["again"]
    assert settings["b"][FLAGS_KEY] == {**settings["a"][FLAGS_KEY], "base_seed": 5}
    read = {str(path) for path in (image, lora, speech) if str(path) in extra or f"{path}=0.5" in extra}
    assert set(settings["a"][INPUTS_KEY]) == read  # what each file held, for the next --settings_from


def test_fit_memory_keeps_the_text_encoder_where_the_video_had_it(tmp_path, monkeypatch):
    """So that the placement it chooses makes the video again in its last bits."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    properties = SimpleNamespace(total_memory=80 * 2**30, name="fake GPU", major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    flags = _recording(tmp_path / "a.mp4", *FAST, "--device", "cuda")
    config = resolve(build_parser().parse_args([*FAST, "--device", "cuda", "--t5_cpu"]))
    made = {"software": SOFTWARE, FLAGS_KEY: flags, "task": "ti2v-5B"}
    _video(tmp_path / "b.mp4", {**made, **run_setup(config)})
    video = str(tmp_path / "b.mp4")
    [fitted] = _jobs("--settings_from", video, "--device", "cuda", "--fit_memory")
    assert fitted.t5_cpu is True and fitted.fit_memory.given == ("t5_cpu",)
    # A video made on another kind of device says nothing of where the encoder runs here.
    on_cpu = {**run_setup(config), "device": "cpu"}
    _video(tmp_path / "c.mp4", {**made, **on_cpu})
    with pytest.warns(UserWarning, match="was made with device cpu"):
        [free] = _jobs("--settings_from", str(tmp_path / "c.mp4"), "--device", "cuda", "--fit_memory")
    assert free.fit_memory.given == ()
    differs = "t5_cpu True, this run computes with t5_cpu False"
    with pytest.warns(UserWarning, match=differs):  # without the fit the command line places it
        [plain] = _jobs("--settings_from", video, "--device", "cuda")
    assert plain.t5_cpu is False and plain.fit_memory is None
    with pytest.warns(UserWarning, match=differs):
        [kept] = _jobs("--settings_from", video, "--device", "cuda", "--fit_memory", "--no-t5_cpu")
    assert kept.t5_cpu is False and kept.fit_memory.given == ("t5_cpu",)
    # Sharded over the GPUs of a launch (--t5_fsdp), the text encoder cannot go to the CPU.
    launch_env(monkeypatch, 0, 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.warns(UserWarning, match=differs):
        [sharded] = _jobs("--settings_from", video, "--device", "cuda", "--fit_memory", "--t5_fsdp")
    assert sharded.t5_cpu is False and sharded.t5_fsdp and sharded.fit_memory.given == ()


def test_an_input_file_changed_since_the_video_is_told(tmp_path, image, lora):
    """The video records what its files held; one at a recorded path that holds something else
    now makes another video."""
    argv = ["--demo", "--task", "i2v-A14B", "--image", str(image), "--lora", str(lora)]
    config = resolve(build_parser().parse_args(argv))
    digests = input_digests(config)
    assert digests == {str(path): f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
                       for path in (image, lora)}
    _video(tmp_path / "a.mp4", {"software": SOFTWARE, FLAGS_KEY: recorded_flags(config, 1),
                                INPUTS_KEY: digests})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _video_settings(tmp_path / "a.mp4").check_inputs(config)
    Image.new("RGB", (64, 48), (200, 10, 30)).save(image)
    with pytest.warns(UserWarning, match=f"{image} changed since {tmp_path / 'a.mp4'} was made .*: the video "
                                         "will differ"):
        _video_settings(tmp_path / "a.mp4").check_inputs(config)
    image.unlink()  # gone since the run read it: left out, and the video is written all the same
    assert set(input_digests(config)) == {str(lora)}
