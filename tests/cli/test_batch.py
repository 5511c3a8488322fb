"""``--batch FILE``: every line checked up front as a command line of its own, then one load of
the models and one video per line, each the video its line would make alone."""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.helpers import launch_env, read_settings, read_video
from wan_runtime import demo, generate, video_output
from wan_runtime.batch_file import resolve_jobs
from wan_runtime.cache import CacheConfig
from wan_runtime.cli_args import InvalidArguments
from wan_runtime.cli_parser import build_parser
from wan_runtime.errors import InputError, NumericalError
from wan_runtime.tasks import TASKS

FAST = ["--demo", "--frame_num", "5", "--sample_steps", "2"]


def _batch(folder: Path, *lines: object, name: str = "jobs.jsonl") -> Path:
    """A batch file of ``lines``: dicts as JSON, strings as they are."""
    path = folder / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _jobs(*argv: str):
    parser = build_parser()
    return resolve_jobs(parser, parser.parse_args(list(argv)))


def _problems(*argv: str) -> list[str]:
    with pytest.raises(InvalidArguments) as caught:
        _jobs(*argv)
    return caught.value.problems


def _errors(stderr: str) -> list[str]:
    """The error lines among the progress bars."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_lines_fill_in_the_command_line(tmp_path, image):
    path = _batch(tmp_path, "# a comment, then a blank line", "",
                  {"prompt": "a fox", "base_seed": 7, "sample_shift": 3, "fbcache": True},
                  {"negative_prompt": "blurry", "image": None, "fb_cfg_sep_diff": False, "fbcache": True,
                   "size": "96*128", "save_file": "two.mp4"})
    first, second = _jobs(*FAST, "--batch", str(path), "--prompt", "a boat", "--image", str(image))
    assert (first.batch_line, second.batch_line) == (3, 4)
    assert (first.prompt, first.base_seed, first.sample_shift, first.image_path) == ("a fox", 7, 3.0, image)
    assert first.cache.fbcache and first.negative_prompt == "" and first.save_file is None
    assert (second.prompt, second.negative_prompt, second.size) == ("a boat", "blurry", "96*128")
    assert second.image is None and second.base_seed == -1  # null: the flag's default, not the command line's
    assert second.cache.fbcache and not second.cache.fb_cfg_sep_diff
    assert second.save_file == Path("two.mp4") and first.frame_num == second.frame_num == 5


def test_a_line_turning_a_cache_off_drops_the_command_lines_settings_of_it(tmp_path):
    caches = ["--teacache", "--teacache_thresh", "0.2", "--fbcache", "--fb_thresh", "0.1"]
    path = _batch(tmp_path, {}, {"teacache": False}, {"fbcache": None}, {"teacache": False, "fbcache": False})
    both, fb, tea, off = (job.cache for job in _jobs(*FAST, *caches, "--batch", str(path)))
    assert both == CacheConfig(teacache=True, teacache_thresh=0.2, fbcache=True, fb_thresh=0.1)
    assert fb == CacheConfig(fbcache=True, fb_thresh=0.1)
    assert tea == CacheConfig(teacache=True, teacache_thresh=0.2)
    assert not off.enabled
    # A setting the line gives itself for a cache it turns off is idle, and said so.
    path = _batch(tmp_path, {"teacache": False, "teacache_thresh": 0.3})
    assert _problems(*FAST, *caches, "--batch", str(path)) == [
        "--batch line 1: --teacache_thresh has no effect without --teacache; add --teacache or drop it"
    ]
    # One the command line gives beside no cache: a line keeps it, unless its null drops it.
    path = _batch(tmp_path, {"teacache": True}, {}, {"teacache_thresh": None})
    assert _problems(*FAST, "--teacache_thresh", "0.3", "--batch", str(path)) == [
        '--batch line 2: --teacache_thresh has no effect without --teacache; add --teacache or drop it (a '
        '--batch line drops the command line\'s with "teacache_thresh": null)'
    ]


def test_a_line_may_switch_a_flag_of_an_optional_value(tmp_path):
    """``true`` as the flag given alone, ``false`` as the flag not given."""
    path = _batch(tmp_path, {"vae_tiling": True}, {"vae_tiling": False}, {"vae_tiling": 128})
    jobs = _jobs(*FAST, "--batch", str(path), "--vae_tiling", "256")
    assert [job.vae_tiling for job in jobs] == [512, 0, 128]


def test_without_a_batch_one_video():
    [job] = _jobs(*FAST, "--prompt", "a fox")
    assert job.batch_line is None and job.prompt == "a fox"


@pytest.mark.parametrize(("line", "problem"), [
    ('{"base_seed": "seven"}', "--batch line 1: base_seed must be a whole number, got \"seven\""),
    ('{"sample_shift": [1]}', "--batch line 1: sample_shift must be a string or a number, got [1]"),
    ('{"fbcache": "yes"}', "--batch line 1: fbcache must be true or false, got \"yes\""),
    ('{"fb_cfg_sep_diff": 1}', "--batch line 1: fb_cfg_sep_diff must be true or false, got 1"),
    ('["a fox"]', "--batch line 1: a line must be a JSON object of flags"),
    ('{"prompt": "a", "prompt": "b"}', "--batch line 1: prompt given twice"),
    ('{"prompt": "a" "fox"}', "--batch line 1: it is not JSON (Expecting ',' delimiter at column 16); write"),
    ('{"base_seed": ' + "9" * 5000 + "}", "--batch line 1: it holds a number of thousands of digits, which"),
    ('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "--batch line 1: it holds nesting deeper than Python reads, which no flag takes; write one flat"),
    ('{"task": "i2v-A14B"}', "--batch line 1: 'task' cannot be set per video (given on the command line, "
                             "the same for every video); a line sets prompt, negative_prompt, image"),
    ('{"lora": "style.safetensors"}', "--batch line 1: 'lora' cannot be set per video (given on the command"),
    ('{"seed": 3}', "--batch line 1: 'seed' is not a flag: did you mean 'base_seed'?"),
    ('{"zzz": 3}', "--batch line 1: 'zzz' is not a flag; a line sets prompt, negative_prompt, image"),
])
def test_a_bad_line_is_named(tmp_path, line, problem):
    [told] = _problems(*FAST, "--batch", str(_batch(tmp_path, line)))
    assert told.startswith(problem)


def test_every_problem_of_every_line_at_once(tmp_path, image):
    """A problem every line has (a command-line setting) is told once; the others with their lines."""
    path = _batch(tmp_path, {"frame_num": 4}, {"frame_num": 4, "image": str(tmp_path / "gone.png")},
                  {"prompt": "fine"}, '{"base_seed": 1.5, "sample_steps": "two", "seed": 1}', '{"prompt": ')
    problems = _problems(*FAST, "--size", "100*100", "--batch", str(path))
    assert problems[0].startswith("demo --size must be width*height with both multiples of 32")
    assert problems[1] == ("--batch lines 1, 2: --frame_num must be 4n+1 from 1 to 4093 (1, 5, 9, ..., 121), "
                           "got 4; nearest valid: 1 or 5")
    assert problems[2].startswith(f"--batch line 2: --image {tmp_path / 'gone.png'} ")
    # A line that does not read is told with every problem of its own, beside the others' problems.
    assert problems[3:6] == [
        "--batch line 4: base_seed must be a whole number, got 1.5",
        '--batch line 4: sample_steps must be a whole number, got "two"',
        "--batch line 4: 'seed' is not a flag: did you mean 'base_seed'?",
    ]
    assert problems[6].startswith("--batch line 5: it is not JSON (Expecting value at column 12)")
    assert len(problems) == 7


def test_the_problems_of_the_lines_come_in_the_order_of_the_lines(tmp_path):
    """A line that does not read among those that do, not after them."""
    path = _batch(tmp_path, '{"base_seed": "x"}', {"frame_num": 4}, '{"base_seed": "x"}', {"frame_num": 4},
                  {"prompt": "fine"})
    problems = _problems(*FAST, "--batch", str(path))
    assert [problem.split(":")[0] for problem in problems] == ["--batch lines 1, 3", "--batch lines 2, 4"]


def test_two_lines_writing_one_file_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _batch(tmp_path, {"save_file": "a.mp4"}, {"save_file": "./a.mp4"}, {"save_file": "b.mp4"},
                  {"frame_num": 4})
    assert _problems(*FAST, "--batch", str(path)) == [  # listed with the lines' other problems
        "--batch line 4: --frame_num must be 4n+1 from 1 to 4093 (1, 5, 9, ..., 121), got 4; nearest valid: "
        "1 or 5",
        f"--batch lines 1, 2 all write {tmp_path / 'a.mp4'}; give each line its own save_file (or leave it "
        "out for the default name)",
    ]
    # Lines that share another problem (the command line's image) are compared too.
    assert _problems(*FAST, "--image", "missing.png", "--batch", str(path))[-1].startswith(
        "--batch lines 1, 2 all write ")
    assert _problems(*FAST, "--save_file", "all.mp4", "--batch", str(_batch(tmp_path, {}, {}))) == [
        "--save_file names one video, and --batch makes several: give each line its own save_file (a line "
        "without one gets the default name, with its line number)"
    ]


@pytest.mark.parametrize(("content", "problem"), [
    (None, "does not exist; give a JSON Lines file, one video per line"),
    ("", "holds no video; write one JSON object per line"),
    ("# only a comment\n\n", "holds no video"),
    (b"\xff\xfe{}", "give a UTF-8 JSON Lines file"),
])
def test_a_batch_file_without_videos_is_refused(tmp_path, content, problem):
    path = tmp_path / "jobs.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    [told] = _problems(*FAST, "--batch", str(path))
    assert told.startswith(f"--batch {path}") or told.startswith(f"cannot read --batch {path}")
    assert problem in told
    [told] = _problems(*FAST, "--batch", str(tmp_path))
    assert told == f"--batch {tmp_path} is a folder; give a JSON Lines file, one video per line"


def test_a_warning_of_every_line_is_shown_once_and_a_lines_own_with_its_number(tmp_path):
    path = _batch(tmp_path, {"prompt": "a"}, {"negative_prompt": "blurry", "sample_guide_scale": 1},
                  {"prompt": "c"})
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        _jobs(*FAST, "--stream_blocks", "1", "--batch", str(path))
    assert [str(w.message) for w in raised] == [
        "--stream_blocks changes nothing on the CPU, where every model already is in CPU memory",
        "--batch line 2: --negative_prompt has no effect at --sample_guide_scale 1 (guidance then uses the "
        "prompt alone)",
    ]


def test_the_problems_of_a_one_line_batch_name_the_line(tmp_path):
    assert _problems(*FAST, "--batch", str(_batch(tmp_path, {"frame_num": 4}))) == [
        "--batch line 1: --frame_num must be 4n+1 from 1 to 4093 (1, 5, 9, ..., 121), got 4; nearest valid: "
        "1 or 5"
    ]


def test_a_windows_file_reads_as_any_other(tmp_path):
    """A byte order mark and CRLF line ends, as Windows editors write; a JSON string may hold a
    line separator (U+2028), which does not end the line."""
    path = tmp_path / "jobs.jsonl"
    path.write_bytes('{"prompt": "a fox\u2028at dawn"}\r\n\r\n{"base_seed": 2}\r\n'.encode("utf-8-sig"))
    first, second = _jobs(*FAST, "--batch", str(path))
    assert (first.prompt, first.batch_line, second.base_seed, second.batch_line) == (
        "a fox\u2028at dawn", 1, 2, 3)


def test_the_command_lines_image_is_decoded_once_and_no_pixels_are_kept(tmp_path, image, monkeypatch):
    """The lines are checked holding no image's pixels, which a batch of many photos could not."""
    from wan_runtime import image_io

    decoded = []
    load = image_io.load_image
    monkeypatch.setattr(image_io, "load_image", lambda *args: decoded.append(args) or load(*args))
    jobs = _jobs(*FAST, "--image", str(image), "--batch", str(_batch(tmp_path, *[{"base_seed": i}
                                                                                   for i in range(5)])))
    assert len(decoded) == 1 and all(job.image is jobs[0].image for job in jobs)
    assert jobs[0].image == image_io.CheckedImage(image, "--image", 64, 48)
    assert jobs[0].image.load().size == (64, 48) and len(decoded) == 2  # decoded again for its video
    # Made from a file that changed size since: that video is refused (a batch goes on without it).
    Image.new("RGB", (32, 32)).save(image)
    with pytest.raises(InputError, match=f"--image {image} changed since it was checked \\(64x48 pixels "
                                         "then, 32x32 now\\); run again"):
        jobs[0].image.load()


def test_negative_prompt_without_guidance_is_told(tmp_path):
    with pytest.warns(UserWarning, match="--negative_prompt has no effect at --sample_guide_scale 1"):
        _jobs(*FAST, "--negative_prompt", "blurry", "--sample_guide_scale", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [job] = _jobs(*FAST, "--negative_prompt", "blurry")
    assert job.negative_prompt == "blurry"


def test_default_names_carry_the_batch_line():
    from datetime import datetime

    name = video_output.default_save_file("ti2v-5B", "1280*704", "cat", datetime(2025, 7, 28), batch_line=12)
    assert name.name.endswith("_cat_20250728_000000_line12.mp4")


def test_dry_run_plans_every_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _batch(tmp_path, {"prompt": "a fox", "base_seed": 1}, "", {"negative_prompt": "blurry",
                                                                       "save_file": "b.mp4"})
    assert generate.main([*FAST, "--batch", str(path), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "a run would make 2 videos, loading the models once" in out
    first, second = out.split("--batch line 1:\n")[1].split("--batch line 3:\n")
    assert "  prompt: a fox\n" in first and "  seed: 1\n" in first
    assert f"  n_prompt: {TASKS['ti2v-5B'].negative_prompt}\n" in first
    default_name = "ti2v-5B_128*96_1_a_fox_<YYYYmmdd_HHMMSS>_line1.mp4"
    assert f"  save_file: {default_name} (the official default name)\n" in first
    assert "  n_prompt: blurry\n" in second and "  save_file: b.mp4\n" in second
    # Both videos have one shape: one estimate of the peak, told for each.
    assert first.count("  memory: the video takes at least ") == 1
    assert second.split("  memory: ")[1].splitlines()[0] == first.split("  memory: ")[1].splitlines()[0]


def test_the_peak_is_worked_out_once_per_video_shape(tmp_path, monkeypatch, capsys):
    from wan_runtime import pipelines

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shapes = []
    real = pipelines.estimate_memory

    def counted(plan, spec, video, *options):
        shapes.append(video)
        return real(plan, spec, video, *options)

    monkeypatch.setattr(pipelines, "estimate_memory", counted)
    path = _batch(tmp_path, {"base_seed": 1}, {"base_seed": 2}, {"vae_tiling": 64}, {"frame_num": 9})
    assert generate.main([*FAST, "--batch", str(path), "--dry_run"]) == 0
    assert [(v.frame_num, v.vae_tiling) for v in shapes] == [(5, 0), (5, 64), (9, 0)]


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        from wan_runtime import demo

        demo.demo_checkpoint("ti2v-5B")
    return cache


@pytest.fixture
def in_folder(demo_cache, tmp_path, monkeypatch):
    """Runs in ``tmp_path`` with the demo checkpoint cached; returns the folder."""
    pytest.importorskip("wan_runtime.pipelines")
    monkeypatch.setenv("XDG_CACHE_HOME", str(demo_cache))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_each_video_is_the_one_its_line_makes_alone(in_folder, capsys):
    """The models load once; a video made after others (a cached one, another negative prompt) is
    the one the same command line makes alone, and each carries its own settings."""
    path = _batch(in_folder, {"fbcache": True, "fb_thresh": 0.5},
                  {"negative_prompt": "blurry", "save_file": "negative.mp4"}, {"save_file": "plain.mp4"})
    assert generate.main([*FAST, "--prompt", "a fox", "--base_seed", "3", "--batch", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("timings: load ") == 1 and out.count("timings: text_encode ") == 2
    assert out.endswith(f"batch: wrote 3 of 3 videos\n{demo.NOTICE}\n")  # the notice once at each end
    assert out.count(demo.NOTICE) == 2
    assert "--batch line 1 (video 1 of 3): a fox\n" in out and "--batch line 3 (video 3 of 3): a fox\n" in out
    [cached] = in_folder.glob("*_line1.mp4")
    assert cached.name.startswith("ti2v-5B_128*96_1_a_fox_")
    assert generate.main([*FAST, "--prompt", "a fox", "--base_seed", "3", "--save_file", "alone.mp4"]) == 0
    alone = read_video(in_folder / "alone.mp4")[0]
    assert np.array_equal(read_video(in_folder / "plain.mp4")[0], alone)
    assert not np.array_equal(read_video(in_folder / "negative.mp4")[0], alone)
    assert read_settings(in_folder / "negative.mp4")["n_prompt"] == "blurry"
    assert read_settings(cached)["cache"].startswith("fbcache=True fb_thresh=0.5 ")
    assert read_settings(in_folder / "plain.mp4")["cache"] == "off"


def test_a_failed_video_does_not_stop_the_batch(in_folder, monkeypatch, capsys):
    made = generate._make_video

    def nan_for_bad(pipeline, config):
        if config.prompt == "bad":
            raise NumericalError("the latent turned NaN at sampling step 1 of 2")
        return made(pipeline, config)

    monkeypatch.setattr(generate, "_make_video", nan_for_bad)
    path = _batch(in_folder, {"save_file": "one.mp4"}, {"prompt": "bad", "save_file": "two.mp4"},
                  {"save_file": "three.mp4"}, {"prompt": "bad", "save_file": "four.mp4"})
    assert generate.main([*FAST, "--batch", str(path)]) == 1
    captured = capsys.readouterr()
    assert _errors(captured.err) == [
        "error: --batch line 2: the latent turned NaN at sampling step 1 of 2; going on with the next line",
        "error: --batch line 4: the latent turned NaN at sampling step 1 of 2",
    ]
    assert "batch: wrote 2 of 4 videos (lines 2, 4 failed, above)" in captured.out
    assert sorted(p.name for p in in_folder.glob("*.mp4")) == ["one.mp4", "three.mp4"]

    # One video alone: its failure is the run's.
    assert generate.main([*FAST, "--prompt", "bad", "--save_file", "alone.mp4"]) == 1
    [error] = _errors(capsys.readouterr().err)
    assert error.startswith("error: NumericalError: the latent turned NaN")


def test_a_video_that_cannot_be_written_does_not_stop_the_batch(in_folder, monkeypatch, capsys):
    """A full disk (or a folder removed) costs the videos it stops, the last one's too."""
    write = video_output.write_mp4

    def disk_full_for_some(video, path, **kwargs):
        if "full" in str(path):
            raise OSError(f"could not write {path}: [Errno 28] No space left on device")
        return write(video, path, **kwargs)

    monkeypatch.setattr(video_output, "write_mp4", disk_full_for_some)
    path = _batch(in_folder, {"save_file": "full1.mp4"}, {"save_file": "two.mp4"}, {"save_file": "full3.mp4"})
    assert generate.main([*FAST, "--batch", str(path)]) == 1
    captured = capsys.readouterr()
    assert _errors(captured.err) == [
        "error: --batch line 1: could not write full1.mp4: [Errno 28] No space left on device; going on with "
        "the next line",
        "error: --batch line 3: could not write full3.mp4: [Errno 28] No space left on device",
    ]
    assert "batch: wrote 1 of 3 videos (lines 1, 3 failed, above)" in captured.out
    assert [p.name for p in in_folder.glob("*.mp4")] == ["two.mp4"]


def test_an_interrupted_batch_keeps_the_finished_videos(in_folder, monkeypatch, capsys):
    made = generate._make_video

    def interrupted_at_second(pipeline, config):
        if config.batch_line == 2:
            raise KeyboardInterrupt
        return made(pipeline, config)

    monkeypatch.setattr(generate, "_make_video", interrupted_at_second)
    path = _batch(in_folder, {"save_file": "one.mp4"}, {"save_file": "two.mp4"}, {"save_file": "three.mp4"})
    assert generate.main([*FAST, "--batch", str(path)]) == 130
    assert _errors(capsys.readouterr().err) == [
        "error: interrupted; the batch wrote 1 of 3 videos (line 2 not finished; line 3 not made); run it "
        "again with --skip_existing not to make the videos written so far again"]
    assert [p.name for p in in_folder.glob("*.mp4")] == ["one.mp4"]


def test_a_batch_interrupted_while_loading_wrote_nothing(in_folder, monkeypatch, capsys):
    from wan_runtime import pipelines

    def interrupted(**arguments):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines, "load_pipeline", interrupted)
    path = _batch(in_folder, {"save_file": "one.mp4"}, {"save_file": "two.mp4"})
    assert generate.main([*FAST, "--batch", str(path)]) == 130
    assert _errors(capsys.readouterr().err) == ["error: interrupted; no video was written"]


def test_running_out_of_memory_stops_the_batch(in_folder, monkeypatch, capsys):
    """Memory is not a line's own problem: the batch stops with the advice a single run gets."""
    made = generate._make_video

    def out_of_memory_at_second(pipeline, config):
        if config.batch_line == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. More advice.")
        return made(pipeline, config)

    monkeypatch.setattr(generate, "_make_video", out_of_memory_at_second)
    path = _batch(in_folder, {"save_file": "one.mp4"}, {"save_file": "two.mp4", "vae_tiling": 256},
                  {"save_file": "three.mp4"})
    assert generate.main([*FAST, "--batch", str(path)]) == 1
    line, error = _errors(capsys.readouterr().err)
    assert line == ("error: --batch line 2 ran out of GPU memory: the batch stops there (run it again with "
                    "--skip_existing not to make the videos written so far again)")
    assert error.startswith("error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB; to fit, ")
    # The line's own settings count: its video decoded in tiles already.
    assert "--dit_fp8" in error and "--vae_tiling" not in error
    assert [p.name for p in in_folder.glob("*.mp4")] == ["one.mp4"]


def test_running_out_of_memory_in_the_decode_advises_tiles_first(in_folder, monkeypatch, capsys):
    from wan_runtime.pipelines import StageOutOfMemory

    def out_of_memory(pipeline, config):
        raise StageOutOfMemory("CUDA out of memory. Tried to allocate 9.00 GiB. More advice.", "vae_decode")

    monkeypatch.setattr(generate, "_make_video", out_of_memory)
    assert generate.main(FAST) == 1
    [error] = _errors(capsys.readouterr().err)
    assert error.startswith("error: out of memory in the VAE decode stage: CUDA out of memory. Tried to "
                            "allocate 9.00 GiB; to fit, try --vae_tiling (the VAE decodes in tiles")


def test_images_too_extreme_for_their_size_are_named_before_loading(in_folder, monkeypatch, capsys):
    from PIL import Image

    Image.new("RGB", (4000, 40)).save(in_folder / "strip.png")
    monkeypatch.setattr("wan_runtime.pipelines.load_pipeline", lambda **kwargs: pytest.fail("loaded"))
    path = _batch(in_folder, {}, {"image": "strip.png"}, {"image": "strip.png", "size": "96*128"})
    assert generate.main([*FAST, "--batch", str(path)]) == 2
    errors = _errors(capsys.readouterr().err)
    assert [error.split(":")[1] for error in errors] == [" --batch line 2", " --batch line 3"]
    assert "does not fit" in errors[0]


def test_skip_existing_makes_only_the_missing_videos(in_folder, capsys):
    """An interrupted batch run again: the lines whose file exists are skipped, a line without a
    save_file cannot be (its default name holds the time) and says so."""
    path = _batch(in_folder, {"save_file": "one.mp4"}, {"save_file": "two.mp4"}, {})
    (in_folder / "one.mp4").write_bytes(b"made before")
    assert generate.main([*FAST, "--batch", str(path), "--skip_existing"]) == 0
    out, err = capsys.readouterr()
    assert "warning: --skip_existing cannot skip --batch line 3 without a save_file" in err
    assert "--batch line 1: one.mp4 exists; skipped (--skip_existing)" in out
    assert "batch: wrote 2 of 2 videos (line 1 skipped, the file exists)\n" in out
    assert (in_folder / "one.mp4").read_bytes() == b"made before" and (in_folder / "two.mp4").exists()
    assert len(list(in_folder.glob("*_line3.mp4"))) == 1

    # Every file there: nothing loads.
    assert generate.main([*FAST, "--save_file", "two.mp4", "--skip_existing"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "two.mp4 exists; skipped (--skip_existing)",
        "nothing to make: every video's file exists (--skip_existing)",
    ]


def test_a_video_kept_that_its_line_would_make_otherwise_is_told(in_folder, capsys):
    """A line edited since its video was made, and a file of something else: kept, and said."""
    one, two = {"save_file": "one.mp4", "base_seed": 3}, {"save_file": "two.mp4", "base_seed": 4}
    assert generate.main([*FAST, "--batch", str(_batch(in_folder, one, two))]) == 0
    (in_folder / "two.mp4").write_bytes(b"another file")
    path = _batch(in_folder, {**one, "base_seed": 5}, two)
    capsys.readouterr()
    assert generate.main([*FAST, "--batch", str(path), "--skip_existing"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warned[0] == ("warning: --batch line 1: one.mp4 was kept, but it was made with base_seed 3 (this "
                         "run: 5); remove it to make this video")
    assert warned[1].startswith("warning: --batch line 2: two.mp4 was kept, but the file two.mp4 cannot be "
                                "read as a video (ffmpeg: ")
    assert warned[1].endswith("); remove it to make this video") and len(warned) == 2


def test_a_dry_run_skipping_every_video_still_checks_the_models(in_folder, monkeypatch, capsys):
    checked = []
    monkeypatch.setattr("wan_runtime.pipelines.check_pipeline", lambda **kwargs: checked.append(kwargs))
    (in_folder / "one.mp4").write_bytes(b"made before")
    path = _batch(in_folder, {"save_file": "one.mp4"})
    assert generate.main([*FAST, "--batch", str(path), "--skip_existing", "--dry_run"]) == 0
    assert len(checked) == 1
    out = capsys.readouterr().out.splitlines()
    assert "--batch line 1: one.mp4 exists; skipped (--skip_existing)" in out
    assert out[-2:] == [
        "dry run: every argument and file is in order (nothing was loaded or generated)",
        "nothing to make: every video's file exists (--skip_existing)",
    ]


def test_a_lightning_folder_is_read_once_for_the_batch(tmp_path, monkeypatch):
    from wan_runtime.lora import lightning_folder

    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    read = []
    monkeypatch.setattr(lightning_folder, "_warn_of_differences", read.append)
    jobs = _jobs(*FAST, "--lora_dir", str(tmp_path), "--batch",
                 str(_batch(tmp_path, *[{"base_seed": i} for i in range(4)])))
    assert len(read) == 1 and all(job.loras == jobs[0].loras for job in jobs)


def test_a_problem_every_line_gives_itself_is_told_with_the_lines(tmp_path):
    """Bare only when the command line has it: here the lines set it, told in a run of numbers."""
    path = _batch(tmp_path, *({"base_seed": seed, "frame_num": 10} for seed in range(5)), {"frame_num": 5},
                  {"frame_num": 10}, {"frame_num": 10})
    assert _problems(*FAST, "--batch", str(path)) == [
        "--batch lines 1-5, 7, 8: --frame_num must be 4n+1 from 1 to 4093 (1, 5, 9, ..., 121), got 10; "
        "nearest valid: 9 or 13"]


def test_a_batch_file_may_be_a_pipe_but_not_under_torchrun(tmp_path, monkeypatch):
    """Read once, as a shell's <(...) gives it; the processes of a launch each read the file."""
    fifo = tmp_path / "jobs"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=('{"base_seed": 4}\n',))
    writer.start()
    [job] = _jobs(*FAST, "--batch", str(fifo))
    writer.join()
    assert job.base_seed == 4
    launch_env(monkeypatch, rank=0, world=2)
    assert _problems(*FAST, "--batch", str(fifo)) == [
        f"--batch {fifo} is a pipe, and under torchrun every process reads the batch file: save it to a "
        "file; give a JSON Lines file, one video per line"]


def test_a_lines_paths_take_home_and_say_where_they_are_looked_for(tmp_path, monkeypatch, image):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "cat.png").write_bytes(image.read_bytes())
    monkeypatch.chdir(tmp_path / "jobs")
    path = _batch(tmp_path, {"image": "~/jobs/cat.png", "save_file": "~/a.mp4"})
    [job] = _jobs(*FAST, "--batch", str(path))
    assert (job.image_path, job.save_file) == (tmp_path / "jobs" / "cat.png", tmp_path / "a.mp4")
    monkeypatch.chdir(tmp_path)
    [problem] = _problems(*FAST, "--batch", str(_batch(tmp_path / "jobs", {"image": "cat.png"})))
    assert problem.startswith("--batch line 1: --image cat.png does not exist; ")
    assert problem.endswith("(a batch file's paths are taken from the current folder; "
                            f"{tmp_path / 'jobs' / 'cat.png'} is beside the batch file)")
