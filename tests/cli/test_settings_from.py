"""``--settings_from VIDEO``: the flags a video records make it again, the command line changes
what it gives (a group of flags, or another task's settings, as a whole), and a video without
readable settings is refused in one line before anything loads."""

from __future__ import annotations

import json
import shlex
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.helpers import read_settings, read_video
from tests.lora.lora_writers import parameter_shapes, random_lora, write_official
from wan_runtime import __version__, demo, generate
from wan_runtime.batch_file import resolve_jobs
from wan_runtime.cli_args import InvalidArguments, build_parser, resolve
from wan_runtime.errors import InputError
from wan_runtime.video_io import read_mp4_settings, write_mp4
from wan_runtime.video_settings import FLAGS_KEY, command_line, recorded_flags, take_video_settings

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
    """The arguments ``argv`` gives with its ``--settings_from`` video's flags filled in."""
    parser = build_parser()
    return take_video_settings(parser, parser.parse_args(list(argv)), list(argv))


def _problems(*argv: str) -> list[str]:
    with pytest.raises(InvalidArguments) as caught:
        _take(*argv)
    return caught.value.problems


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A LoRA that fits every DiT of the demo's i2v-A14B checkpoint."""
    folder = tmp_path_factory.mktemp("lora")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
        ckpt_dir, _ = demo.demo_checkpoint("i2v-A14B")
    shapes = parameter_shapes(ckpt_dir / "high_noise_model")
    return write_official(folder / "style.safetensors", random_lora(shapes))


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
        "i2v": [*FAST, "--task", "i2v-A14B", "--image", str(image), "--lora", f"{lora}=0.3",
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
    # i2v-A14B's default guidance, a scale per expert, is the default again.
    assert flags["sample_guide_scale"] is None and flags["negative_prompt"] is None


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
    # A checkpoint folder replaces the demo.
    ([], ["--ckpt_dir", "{folder}"], {"demo": False, "ckpt_dir": "{folder}", "frame_num": 5}),
])
def test_a_group_of_flags_is_replaced_as_a_whole(tmp_path, image, lora, recorded, given, expected):
    def filled(value):
        if isinstance(value, list):
            return [filled(item) for item in value]
        if isinstance(value, dict):
            return {key: filled(item) for key, item in value.items()}
        return value.format(lora=lora, image=image, folder=tmp_path) if isinstance(value, str) else value

    _recording(tmp_path / "a.mp4", *FAST, *filled(recorded))
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
    assert "the command line's own, for another task than the video's ti2v-5B: fb_cfg_sep_diff, " in out


def test_a_batch_line_sets_what_it_gives_over_the_video(tmp_path):
    _recording(tmp_path / "a.mp4", *FAST, "--prompt", "a fox")
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"base_seed": 1}\n{"prompt": "a boat"}\n')
    parser = build_parser()
    argv = ["--settings_from", str(tmp_path / "a.mp4"), "--batch", str(batch)]
    first, second = resolve_jobs(parser, take_video_settings(parser, parser.parse_args(argv), argv))
    assert (first.prompt, first.base_seed, first.frame_num) == ("a fox", 1, 5)
    assert (second.prompt, second.base_seed) == ("a boat", 11)


def test_a_video_of_another_version_is_taken_with_a_warning(tmp_path):
    flags = _recording(tmp_path / "a.mp4", *FAST)
    _video(tmp_path / "old.mp4", {"software": "wan_runtime 0.0.9", FLAGS_KEY: flags})
    with pytest.warns(UserWarning, match="made by wan_runtime 0.0.9, and this is wan_runtime .*: the same "):
        _take("--settings_from", str(tmp_path / "old.mp4"))


@pytest.mark.parametrize(("settings", "problem"), [
    ({"software": SOFTWARE}, "records no flags (it was made by wan_runtime"),
    ({"software": SOFTWARE, FLAGS_KEY: {"base_seed": "seven"}},
     'base_seed must be a whole number, got "seven"'),
    ({"software": SOFTWARE, FLAGS_KEY: {"device": "cuda"}}, "'device' is not a flag a video records"),
    ({"software": SOFTWARE, FLAGS_KEY: {"lora": "x.safetensors"}}, "lora must be a list of strings"),
    ({"software": SOFTWARE, FLAGS_KEY: {"dit_fp8": 1}}, "dit_fp8 must be true or false, got 1"),
])
def test_unusable_recorded_flags_are_named(tmp_path, settings, problem):
    _video(tmp_path / "a.mp4", settings)
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
    written = _video(tmp_path / "b.mp4", settings)
    assert read_mp4_settings(written) == settings == read_settings(written)


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
             "i2v-A14B": ["--image", str(image), "--lora_high_noise", f"{lora}=0.5", "--teacache"],
             "s2v-14B": ["--audio", str(speech), "--infer_frames", "8", "--num_clip", "2", "--size", "64*64",
                         "--image", str(image)]}[task]
    fast = ["--demo", "--sample_steps", "2", *(["--frame_num", "5"] if task != "s2v-14B" else [])]
    assert generate.main([*fast, "--task", task, *extra, "--save_file", "a.mp4"]) == 0
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


def test_an_image_is_one_the_settings_name(in_folder, capsys):
    """A recorded image that is gone is refused under its flag, as if given."""
    image = in_folder / "gone.png"
    Image.new("RGB", (32, 32)).save(image)
    assert generate.main([*FAST, "--image", str(image), "--save_file", "a.mp4"]) == 0
    image.unlink()
    capsys.readouterr()
    assert generate.main(["--settings_from", "a.mp4"]) == 2
    out, err = capsys.readouterr()
    assert f"--image {image}" in out
    assert "gone.png" in err and err.startswith("error: ")
