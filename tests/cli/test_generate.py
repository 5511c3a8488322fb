"""``python -m wan_runtime.generate`` end to end on the demo's tiny checkpoints, in subprocesses:
a decodable MP4 with its settings, and no output from a run that is interrupted or fails.

The runs use ``--demo`` because real checkpoints only run at the official sizes (over a minute
per run on a CPU even with tiny weights); the demo takes the same path after validation.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("wan_runtime.pipelines")

from tests.cli.helpers import cli_env, read_settings, read_video, run_module  # noqa: E402
from tests.lora.lora_writers import parameter_shapes, random_lora, write_official  # noqa: E402
from tests.pipelines.images import write_pose_video  # noqa: E402
from wan_runtime import demo  # noqa: E402
from wan_runtime.audio_io import decode_audio, write_wav  # noqa: E402
from wan_runtime.tasks import TASKS  # noqa: E402

FAST = ["--demo", "--frame_num", "5", "--sample_steps", "2"]


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """An ``XDG_CACHE_HOME`` holding both demo checkpoints, written once for the module."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        for task in TASKS:
            demo.demo_checkpoint(task)
    return {"XDG_CACHE_HOME": str(cache)}


def _generate(*args: str, cwd, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_module("wan_runtime.generate", *args, cwd=cwd, env=env)


def test_ti2v_demo_writes_the_video_under_the_official_name(cache_env, tmp_path):
    result = _generate(*FAST, "--prompt", "a red fox", "--base_seed", "42", cwd=tmp_path, env=cache_env)
    assert result.returncode == 0, result.stderr
    [path] = tmp_path.iterdir()
    size = "128x96" if sys.platform == "win32" else "128*96"
    assert path.name.startswith(f"ti2v-5B_{size}_1_a_red_fox_") and path.suffix == ".mp4"
    frames, fps = read_video(path)
    assert frames.shape == (5, 96, 128, 3) and fps == TASKS["ti2v-5B"].fps
    settings = read_settings(path)
    assert (settings["prompt"], settings["seed"], settings["frame_num"], settings["sampling_steps"]) == (
        "a red fox", 42, 5, 2
    )
    assert (settings["task"], settings["size"], settings["demo"]) == ("ti2v-5B", "128*96", True)
    assert settings["n_prompt"] == TASKS["ti2v-5B"].negative_prompt
    assert settings["cache"] == "off" and settings["compile"] is False and "step_cache" not in settings
    out = result.stdout
    assert out.count(demo.NOTICE) == 2 and "using cached checkpoint" in out
    assert "seed: 42" in out and "prompt: a red fox" in out
    assert "timings: load " in out and "denoise" in out and ", write " in out and "peak memory: " in out
    assert "memory: the weights take at most " in out and " GiB of cpu memory at once (VAE " in out
    assert "2/2" in result.stderr  # the progress bar reached the last step
    assert "Traceback" not in result.stderr


def test_i2v_demo_follows_the_image_and_the_save_file(cache_env, tmp_path):
    image = tmp_path / "portrait.png"
    Image.new("RGB", (96, 128), (200, 30, 30)).save(image)
    target = tmp_path / "out" / "cat.mp4"
    target.parent.mkdir()
    result = _generate(*FAST, "--task", "i2v-A14B", "--image", str(image), "--save_file", str(target),
                       "--fbcache", "--fb_thresh", "0.1", "--fb_downsample", "2", cwd=tmp_path, env=cache_env)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in target.parent.iterdir()] == ["cat.mp4"]
    frames, fps = read_video(target)
    # The 128*96 area keeps the portrait image's aspect ratio.
    assert frames.shape == (5, 128, 96, 3) and fps == TASKS["i2v-A14B"].fps
    settings = read_settings(target)
    assert (settings["image"], settings["guide_scale"]) == (str(image), [3.5, 3.5])
    assert settings["cache"] == (
        "fbcache=True fb_thresh=0.1 fb_metric=hidden_rel_l1 fb_downsample=2 fb_ema=0.0 fb_warmup=1 "
        "fb_last_steps=1 fb_cfg_sep_diff=True"
    )
    assert "CacheManager[high] summary: " in result.stdout and "CacheManager[low] summary: " in result.stdout
    # What the cache did is kept in the video: per expert and branch, each of the 2 steps counted once.
    telemetry = settings["step_cache"]
    assert set(telemetry) == {"high", "low"}
    branches = [stats for e in telemetry.values() for key, stats in e.items() if key != "residual_bytes"]
    assert sum(stats["steps"] for stats in branches) == 2 * 2
    assert all(stats["computed"] + stats["skipped"] == stats["steps"] for stats in branches)


def test_i2v_demo_with_a_lora_per_expert(cache_env, tmp_path, monkeypatch):
    """The LoRAs change the video, are recorded in it, and one made for another model is refused
    with one line before loading."""
    monkeypatch.setenv("XDG_CACHE_HOME", cache_env["XDG_CACHE_HOME"])
    ckpt_dir, _ = demo.demo_checkpoint("i2v-A14B")
    lora = write_official(tmp_path / "lightning=high.safetensors",
                          random_lora(parameter_shapes(ckpt_dir / "high_noise_model")))
    args = [*FAST, "--task", "i2v-A14B", "--base_seed", "5"]
    outputs = {}
    for name, extra in {"plain": [], "lora": ["--lora_high_noise", f"{lora}=0.5"]}.items():
        outputs[name] = tmp_path / f"{name}.mp4"
        result = _generate(*args, *extra, "--save_file", str(outputs[name]), cwd=tmp_path, env=cache_env)
        assert result.returncode == 0, result.stderr
    assert not np.array_equal(read_video(outputs["plain"])[0], read_video(outputs["lora"])[0])
    assert read_settings(outputs["lora"])["loras"] == [f"{lora}=0.5 (high-noise expert)"]
    assert read_settings(outputs["plain"])["loras"] == []

    other = write_official(tmp_path / "other.safetensors", {"blocks.0.self_attn.q": {
        "down": torch.ones(2, 4), "up": torch.ones(4, 2)}})
    result = _generate(*args, "--lora", str(other), cwd=tmp_path, env=cache_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "does not fit the i2v-A14B high-noise DiT" in line


def test_i2v_demo_as_the_lightning_release_runs(cache_env, tmp_path, monkeypatch):
    """A Wan2.2-Lightning folder (--lora_dir), which brings the release's sampling settings: the
    video of the same LoRAs given per expert with those settings spelled out, with the LoRAs and
    the solver recorded."""
    monkeypatch.setenv("XDG_CACHE_HOME", cache_env["XDG_CACHE_HOME"])
    ckpt_dir, _ = demo.demo_checkpoint("i2v-A14B")
    folder = tmp_path / "lightning"
    folder.mkdir()
    for seed, expert in enumerate(("high_noise", "low_noise")):
        # As the release's files: unprefixed names, block linears alone, alpha 8 (2 * rank 4).
        write_official(folder / f"{expert}_model.safetensors", random_lora(
            parameter_shapes(ckpt_dir / f"{expert}_model"), seed=seed, top=False, biases=False), prefix="")
    args = ["--demo", "--task", "i2v-A14B", "--frame_num", "5", "--base_seed", "3"]
    runs = {"folder": ["--lora_dir", str(folder)],
            "files": ["--lora_high_noise", str(folder / "high_noise_model.safetensors"),
                      "--lora_low_noise", str(folder / "low_noise_model.safetensors"), "--sample_solver",
                      "euler", "--sample_steps", "4", "--sample_shift", "5", "--sample_guide_scale", "1"]}
    for name, extra in runs.items():
        result = _generate(*args, *extra, "--save_file", str(tmp_path / f"{name}.mp4"), cwd=tmp_path,
                           env=cache_env)
        assert result.returncode == 0, result.stderr
    assert np.array_equal(read_video(tmp_path / "folder.mp4")[0], read_video(tmp_path / "files.mp4")[0])
    settings = read_settings(tmp_path / "folder.mp4")
    assert settings["sample_solver"] == "euler" and settings["sampling_steps"] == 4
    assert settings["guide_scale"] == [1.0, 1.0] and settings["shift"] == 5.0
    assert settings["loras"] == [f"{folder / 'high_noise_model.safetensors'}=1 (high-noise expert)",
                                 f"{folder / 'low_noise_model.safetensors'}=1 (low-noise expert)"]


def test_compiled_demo_writes_the_video(cache_env, tmp_path):
    """Compiled blocks, one of them streamed (which on the CPU says it changes nothing), with
    float8 weights."""
    target = tmp_path / "compiled.mp4"
    result = _generate(*FAST, "--compile", "--stream_blocks", "1", "--dit_fp8", "--save_file", str(target),
                       cwd=tmp_path, env=cache_env)
    assert result.returncode == 0, result.stderr
    frames, _ = read_video(target)
    assert frames.shape == (5, 96, 128, 3)
    assert read_settings(target)["compile"] is True and "compile: True" in result.stdout
    assert read_settings(target)["stream_blocks"] == 1 and read_settings(target)["dit_fp8"] is True
    assert "--stream_blocks changes nothing on the CPU" in result.stderr
    assert "the first sampling step also compiles the DiT blocks" in result.stdout


def test_failed_write_exits_1_and_leaves_no_file(cache_env, tmp_path, tmp_path_factory):
    # ffmpeg fails as the disk fills: a failure after the whole pipeline ran, the user's to mend.
    fake = tmp_path_factory.mktemp("bin") / "ffmpeg"
    fake.write_text("""#!/bin/sh
case " $* " in *" -encoders "*) echo ' V....D libx264   libx264 H.264'; exit 0;; esac
cat > /dev/null
echo "[out#0/mp4 @ 0x5a] Error writing trailer: No space left on device" >&2
exit 1
""")
    fake.chmod(0o755)
    target = tmp_path / "out.mp4"
    result = _generate(*FAST, "--save_file", str(target), cwd=tmp_path,
                       env=dict(cache_env, IMAGEIO_FFMPEG_EXE=str(fake)))
    assert result.returncode == 1
    assert list(tmp_path.iterdir()) == []
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error == (f"error: could not write {target}: ffmpeg failed with exit status 1 (Error writing "
                     "trailer: No space left on device); the video was made but not written: mend that and "
                     "run again")


def test_no_ffmpeg_to_write_with_is_refused_before_the_run(cache_env, tmp_path):
    result = _generate(*FAST, "--save_file", str(tmp_path / "out.mp4"), cwd=tmp_path,
                       env=dict(cache_env, IMAGEIO_FFMPEG_EXE="/bin/false"))
    assert result.returncode == 2 and "step" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: cannot write the video: ffmpeg /bin/false fails with exit status 1 (no reason given); unset "
        "IMAGEIO_FFMPEG_EXE (it names /bin/false) to use the ffmpeg that imageio-ffmpeg bundles, or name an "
        "ffmpeg built with libx264"]


def test_interrupted_run_leaves_no_file(cache_env, tmp_path):
    target = tmp_path / "out.mp4"
    process = subprocess.Popen(
        [sys.executable, "-m", "wan_runtime.generate", "--demo", "--save_file", str(target)],
        cwd=tmp_path, env=cli_env(**cache_env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    stderr = _read_until(process, b"step", timeout=120)
    process.send_signal(signal.SIGTERM)
    rest = process.communicate(timeout=60)[1]
    stderr = (stderr + rest).decode()
    assert process.returncode == 130, stderr
    assert "error: interrupted; no video was written" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def _read_until(process: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    """Read ``process``'s stderr until ``marker`` appears (the progress bar has started)."""
    data, deadline = b"", time.monotonic() + timeout
    fd = process.stderr.fileno()
    while marker not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and process.poll() is None, data.decode()
        if select.select([fd], [], [], remaining)[0]:
            data += os.read(fd, 4096)
    return data


def test_s2v_demo_carries_its_speech(cache_env, tmp_path):
    """The built-in image and sound: one clip of 8 frames less the 3 the first clip drops, and an
    AAC sound track as long as the video."""
    target = tmp_path / "talk.mp4"
    result = _generate("--demo", "--task", "s2v-14B", "--size", "64*64", "--sample_steps", "1",
                       "--save_file", str(target), cwd=tmp_path, env=cache_env)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["talk.mp4"]
    frames, fps = read_video(target)
    assert frames.shape == (5, 64, 64, 3) and fps == TASKS["s2v-14B"].fps
    banner = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(target)],
                            capture_output=True).stderr.decode(errors="replace")
    assert "Audio: aac" in banner
    assert decode_audio(target).size == 5 * 16000 // 16
    settings = read_settings(target)
    assert (settings["audio"], settings["infer_frames"], settings["frame_num"]) == (
        "built-in demo sound", 8, 5
    )


def test_s2v_video_ends_with_the_speech(cache_env, tmp_path):
    """As the official merge (ffmpeg -shortest) ends the video with the speech: of the 5 frames the
    clip makes, the 4 that 0.2 s of speech spans at 16 fps (the last begun before it ends)."""
    speech = write_wav(demo.demo_audio()[:3200], tmp_path / "short.wav")
    target = tmp_path / "talk.mp4"
    result = _generate("--demo", "--task", "s2v-14B", "--size", "64*64", "--sample_steps", "1", "--audio",
                       str(speech), "--save_file", str(target), cwd=tmp_path, env=cache_env)
    assert result.returncode == 0, result.stderr
    assert f"wrote {target} (4 frames, 64x64, 16 fps; the last 1 of 5 made, past the speech, left out)" in (
        result.stdout)
    frames, _ = read_video(target)
    assert frames.shape == (4, 64, 64, 3)
    assert decode_audio(target).size == 3200  # the whole speech
    assert read_settings(target)["frame_num"] == 4  # the settings describe the file
    assert "  frame_num: 4\n" in result.stdout


def test_s2v_demo_follows_a_pose_video(cache_env, tmp_path):
    """A pose video shorter than the clip (padded with -1 frames) at 30 fps, of another shape."""
    pose = write_pose_video(tmp_path / "pose.mp4", 40, 72, frames=7, fps=30)
    target = tmp_path / "posed.mp4"
    result = _generate("--demo", "--task", "s2v-14B", "--size", "64*64", "--sample_steps", "1",
                       "--pose_video", str(pose), "--save_file", str(target), cwd=tmp_path, env=cache_env)
    assert result.returncode == 0, result.stderr
    frames, _ = read_video(target)
    assert frames.shape == (5, 64, 64, 3)
    assert read_settings(target)["pose_video"] == str(pose)


def test_s2v_undecodable_audio_is_one_line_and_exit_2(cache_env, tmp_path):
    (tmp_path / "talk.mp3").write_bytes(b"ID3 but nothing else")
    result = _generate("--demo", "--task", "s2v-14B", "--audio", str(tmp_path / "talk.mp3"), cwd=tmp_path,
                       env=cache_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --audio {tmp_path / 'talk.mp3'} cannot be decoded by ffmpeg")


def test_a_run_loads_with_every_option_load_pipeline_takes(tmp_path):
    """A flag that ``_load_arguments`` left out would load with that option's default."""
    import inspect

    from wan_runtime.cli_args import resolve
    from wan_runtime.cli_parser import build_parser
    from wan_runtime.generate import _load_arguments
    from wan_runtime.pipelines import load_pipeline
    from wan_runtime.tiny_checkpoints import write_task_checkpoint

    folder = write_task_checkpoint("ti2v-5B", tmp_path / "ti2v")
    config = resolve(build_parser().parse_args(["--ckpt_dir", str(folder), "--device", "cpu"]))
    arguments = _load_arguments(config)
    assert set(arguments) == set(inspect.signature(load_pipeline).parameters)
