"""s2v-14B against the official ``WanS2V.generate`` (float32, CPU, same seed), with and without a
pose video, and its input checks.

The tiny runs use a 9-frame motion context instead of the release's 73 (the official pipeline
reads it from ``motion_frames``, ours from ``S2VPipeline.motion_frames``): the clip logic is the
same and the VAE work, which dominates a CPU run, is 8 times smaller. One run checks the release's
context itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.pipelines.images import write_pose_video
from tests.pipelines.official_s2v import official_pose_frames, official_s2v_pipeline, speech2video
from tests.tolerances import rel_l2
from wan_runtime import pose_video
from wan_runtime.cache import CacheConfig
from wan_runtime.errors import InputError
from wan_runtime.models.s2v_dit import MOTION_FRAMES as RELEASE_MOTION_FRAMES
from wan_runtime.pipelines import load_pipeline
from wan_runtime.pipelines.pose import pose_clips
from wan_runtime.pipelines.resolution import s2v_output_size

# Same weights, float32, the same operations in another order, through 2 clips of 2 solver steps
# whose second clip re-encodes the first's frames: measured ~1e-6; 1e-3 is the bound.
S2V_VIDEO_VS_OFFICIAL = 1e-3
MOTION_FRAMES = (9, 3)
# 0.5 s of speech: at 4 frames per clip (0.25 s) the audio starts 2 clips.
SAMPLES = 8000
RUN = {"infer_frames": 4, "size": "64*64", "sampling_steps": 2, "seed": 11, "num_clip": 2}


@pytest.fixture(scope="module")
def s2v_pipeline(s2v_root):
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32)
    pipeline.motion_frames = MOTION_FRAMES
    return pipeline


@pytest.fixture(scope="module")
def speech():
    t = np.arange(SAMPLES) / 16000
    chirp = np.sin(2 * np.pi * (200 + 600 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.4 * chirp).astype(np.float32)


@pytest.fixture(scope="module")
def portrait():
    """72x56: the 64x64 output needs both the short-side resize and the centre crop."""
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (56, 72, 3), dtype=np.uint8))


def _official_video(root, tmp_path, image, speech, motion_frames, **options) -> torch.Tensor:
    """The official ``WanS2V.generate`` with ``RUN``'s settings on ``image`` and ``speech``."""
    image.save(tmp_path / "ref.png")
    np.save(tmp_path / "speech.npy", speech)
    official = official_s2v_pipeline(root, motion_frames)
    with torch.no_grad():
        # enable_tts=False and its three prompts None, as the official generate.py passes them.
        return official.generate(
            "a woman speaks", str(tmp_path / "ref.png"), str(tmp_path / "speech.npy"), False, None, None,
            None,
            num_repeat=RUN["num_clip"], max_area=64 * 64, infer_frames=RUN["infer_frames"], shift=3.0,
            sampling_steps=RUN["sampling_steps"], guide_scale=4.5, seed=RUN["seed"], offload_model=False,
            **options,
        )


def _check_parity(got: torch.Tensor, want: torch.Tensor, shape: tuple[int, ...], label: str) -> None:
    assert got.shape == want.shape == shape
    assert want.std() > 0.05, "degenerate reference video"
    error = rel_l2(got, want)
    print(f"s2v video vs official ({label}): rel L2 {error:.3e}")
    assert error <= S2V_VIDEO_VS_OFFICIAL


@pytest.mark.parametrize("start_from_ref", [False, True])
def test_matches_official(s2v_root, s2v_pipeline, speech, portrait, tmp_path, start_from_ref):
    want = _official_video(s2v_root, tmp_path, portrait, speech, MOTION_FRAMES[0],
                           init_first_frame=start_from_ref)
    got = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, start_from_ref=start_from_ref,
                                progress=False, **RUN)
    frames = 2 * RUN["infer_frames"] - (0 if start_from_ref else 3)
    _check_parity(got, want, (3, frames, 64, 64), f"start_from_ref={start_from_ref}")
    assert s2v_pipeline.last_report.size == "64*64" and s2v_pipeline.last_report.frame_num == frames


def test_the_shortest_speech_the_official_pipeline_takes(s2v_root, s2v_pipeline, speech, portrait, tmp_path):
    """720 samples (45 ms): wav2vec2's two first features, one clip; one sample fewer is refused."""
    want = _official_video(s2v_root, tmp_path, portrait, speech[:720], MOTION_FRAMES[0])
    got = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech[:720], progress=False, **RUN)
    _check_parity(got, want, (3, RUN["infer_frames"] - 3, 64, 64), "720 samples")
    with pytest.raises(InputError, match="too short: 45 ms; s2v needs at least 45 ms"):
        s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech[:719], progress=False, **RUN)


def test_release_motion_context_matches_official(s2v_root, s2v_pipeline, speech, portrait, tmp_path,
                                                 monkeypatch):
    """The release's 73 frames (19 latents) of motion context, the pipeline's default (~20 s on
    2 idle CPU cores: the VAE encodes and decodes the context in both pipelines)."""
    assert RELEASE_MOTION_FRAMES == (73, 19)
    monkeypatch.setattr(s2v_pipeline, "motion_frames", RELEASE_MOTION_FRAMES)
    want = _official_video(s2v_root, tmp_path, portrait, speech, RELEASE_MOTION_FRAMES[0])
    got = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, progress=False, **RUN)
    _check_parity(got, want, (3, 2 * RUN["infer_frames"] - 3, 64, 64), "motion context (73, 19)")


def test_pose_video_matches_official(s2v_root, s2v_pipeline, speech, portrait, tmp_path):
    """A 45x77 pose video at 30 fps for the 64x64 output: every 2nd frame, resized to 64x109 and
    cropped; its 6 frames fill 1.5 clips, the rest is -1. (``test_pose_frames_are_the_official``
    covers the other resizes, paddings and frame rates, before the VAE.)"""
    pose = write_pose_video(tmp_path / "pose.mp4", 45, 77, frames=11, fps=30)
    want = _official_video(s2v_root, tmp_path, portrait, speech, MOTION_FRAMES[0], pose_video=str(pose))
    got = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, pose_video=pose,
                                progress=False, **RUN)
    _check_parity(got, want, (3, 2 * RUN["infer_frames"] - 3, 64, 64), "pose video")


# Pose videos (width, height, frames, fps) and output sizes (H, W): frame intervals 2 (30 fps,
# 24 fps: round(1.5), 40 fps: round(2.5)) and 1 (8 fps), crops at an odd offset, zero padding on
# both sides (odd in total), a frame already at the size, and -1 frames filling part of a clip or
# a whole one.
POSE_CASES = {
    "portrait 30 fps, short": ((45, 77, 11, 30), (64, 128)),
    "landscape 24 fps, long": ((79, 48, 40, 24), (64, 128)),
    "output size 8 fps, 3 frames": ((64, 64, 3, 8), (64, 64)),
    "square 40 fps, upscaled": ((50, 50, 30, 40), (64, 64)),
}


@pytest.mark.parametrize("name", list(POSE_CASES))
def test_pose_frames_are_the_official(name, tmp_path):
    """Bitwise the frames the official pipeline hands its VAE, clip by clip."""
    (width, height, frames, fps), size = POSE_CASES[name]
    path = write_pose_video(tmp_path / "pose.mp4", width, height, frames, fps)
    want = official_pose_frames(path, 2, RUN["infer_frames"], size)
    got = list(pose_clips(path, pose_video.probe_video(path), 2, RUN["infer_frames"], *size, output_fps=16))
    assert len(got) == len(want) == 2
    for clip, (ours, official) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(ours[:, 0], ours[:, 1]), "the first frame leads twice"
        assert torch.equal(ours[:, 1:], official[0]), f"clip {clip}"


def test_decoded_wav_is_the_samples(tmp_path, speech):
    """A 16 kHz mono float WAV decodes (through ffmpeg) to exactly its samples."""
    import subprocess

    from wan_runtime.audio_io import decode_audio, ffmpeg_exe

    raw = tmp_path / "speech.f32"
    raw.write_bytes(speech.tobytes())
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", "16000", "-ac", "1", "-i", str(raw),
                    "-c:a", "pcm_f32le", str(tmp_path / "speech.wav")], check=True)
    np.testing.assert_array_equal(decode_audio(tmp_path / "speech.wav"), speech)


@pytest.mark.parametrize(("change", "message"), [
    ({"audio": None}, "driven by speech"),
    ({"image": None}, "needs a reference image"),
    ({"audio": "missing.wav"}, "does not exist"),
    ({"audio": np.zeros(0, np.float32)}, "holds no sound"),
    ({"audio": np.zeros(500, np.float32)}, "too short"),
    ({"audio": np.zeros((2, 16000), np.float32)}, "must be mono"),
    ({"audio": np.ones(16000, bool)}, "samples must be real numbers, got an array of bool"),
    ({"audio": np.ones(16000, np.complex64)}, "samples must be real numbers, got an array of complex64"),
    ({"audio": torch.ones(16000, dtype=torch.complex64)}, "must be real numbers, got a torch.complex64"),
    ({"audio": torch.ones(16000, dtype=torch.bool)}, "samples must be real numbers, got a torch.bool tensor"),
    ({"infer_frames": 6}, "multiple of 4"),
    ({"infer_frames": 4100}, "multiple of 4 from 4 to 4096"),
    ({"seed": 2**64 - 1}, "too large for 2 clips"),
    ({"num_clip": 0}, "num_clip"),
    ({"pose_video": "pose.mp4"}, "pose_video pose.mp4 does not exist"),
    ({"pose_video": 3}, "pose_video must be the path of a video file"),
    ({"start_from_ref": 1}, "start_from_ref"),
])
def test_bad_input_is_refused(s2v_pipeline, speech, portrait, monkeypatch, change, message):
    """Before any model runs (the seed's clips counted from the speech's samples)."""
    def fail(*args, **kwargs):
        raise AssertionError("a model ran before the arguments were checked")

    monkeypatch.setattr(s2v_pipeline, "audio_encoder", fail)
    monkeypatch.setattr(s2v_pipeline.text_encoder, "encode", fail)
    monkeypatch.setattr(s2v_pipeline.vae, "encode", fail)
    arguments = {"image": portrait, "audio": speech, **RUN, **change}
    with pytest.raises(InputError, match=message):
        s2v_pipeline.generate("a woman speaks", progress=False, **arguments)


def test_speech_past_the_longest_taken_is_refused_before_it_is_all_decoded(tmp_path, monkeypatch, speech):
    from wan_runtime import audio_io

    monkeypatch.setattr(audio_io, "MAX_SECONDS", 0)
    path = audio_io.write_wav(speech, tmp_path / "talk.wav")
    with pytest.raises(InputError, match=r"talk.wav is longer than 0 minutes, the longest speech the runtime "
                                         r"takes; cut it \(e.g. ffmpeg -i IN -t 0 OUT.wav\)"):
        audio_io.decode_audio(path)


def test_speech_of_many_channels_is_read_no_further_than_its_bytes_allow(tmp_path, monkeypatch):
    """The cap counts each channel: a crafted file of dozens of them would fill the memory first."""
    import wave

    from wan_runtime import audio_io

    path = tmp_path / "many.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(8)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes(2 * 8 * 16000))  # one second
    monkeypatch.setattr(audio_io, "_MAX_BYTES", 16000 * 4 * 4)  # two seconds of stereo
    told = r"many.wav holds more sound than the runtime decodes, an hour of stereo \(its channels count"
    with pytest.raises(InputError, match=told):
        audio_io.decode_audio(path)


def test_undecodable_audio_is_refused(s2v_pipeline, portrait, tmp_path):
    (tmp_path / "noise.mp3").write_bytes(b"not audio at all" * 10)
    with pytest.raises(InputError, match="cannot be decoded by ffmpeg"):
        s2v_pipeline.generate("a woman speaks", image=portrait, audio=tmp_path / "noise.mp3", progress=False)


@pytest.mark.parametrize(("kind", "reason"), [
    ("junk", r"cannot be decoded by ffmpeg \(.*Invalid data"),
    ("sound only", "has no video stream; pass an MP4, MOV, WebM or other video file"),
])
def test_undecodable_pose_video_is_refused(s2v_pipeline, portrait, speech, tmp_path, kind, reason):
    from wan_runtime.audio_io import write_wav

    pose = tmp_path / "pose.mp4"
    if kind == "junk":
        pose.write_bytes(b"not a video at all" * 10)
    else:
        pose = write_wav(speech, tmp_path / "pose.wav")
    message = rf"pose_video \S*{pose.name} {reason}"
    with pytest.raises(InputError, match=message):
        s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, pose_video=pose, progress=False)


def test_pose_frames_too_large_to_decode_are_refused_before_one_is(tmp_path, monkeypatch):
    monkeypatch.setattr(pose_video.imageio_ffmpeg, "read_frames", _fake_reader({"size": (16000, 16000),
                                                                                "fps": 25.0}, 0))
    (tmp_path / "pose.mp4").write_bytes(b"")
    told = "pose.mp4 has frames of 16000x16000 pixels, more than the 67,108,864 the runtime decodes; scale"
    with pytest.raises(InputError, match=told):
        pose_video.probe_video(tmp_path / "pose.mp4")


def _fake_reader(meta: dict, frames: int):
    def read_frames(path, **options):
        yield meta
        yield from [bytes(12)] * frames
    return read_frames


@pytest.mark.parametrize(("meta", "frames", "message"), [
    ({"size": (2, 2), "fps": 25.0}, 0, "has no video frames"),
    ({"size": (2, 2), "fps": 0}, 1, "ffmpeg reports no frame rate"),
])
def test_pose_video_without_frames_or_frame_rate_is_refused(tmp_path, monkeypatch, meta, frames, message):
    """Cases ffmpeg itself rarely lets through (it fails on a video without frames), as
    imageio-ffmpeg would report them."""
    monkeypatch.setattr(pose_video.imageio_ffmpeg, "read_frames", _fake_reader(meta, frames))
    (tmp_path / "pose.mp4").write_bytes(b"")
    with pytest.raises(InputError, match=message):
        pose_video.probe_video(tmp_path / "pose.mp4")


@pytest.mark.parametrize("config", [
    CacheConfig(teacache=True, teacache_thresh=0.0, teacache_warmup=0, teacache_last_steps=0),
    CacheConfig(fbcache=True, fb_thresh=0.0, fb_warmup=0, fb_last_steps=0),
    CacheConfig(teacache=True, teacache_thresh=0.0, fbcache=True, fb_thresh=0.0),
], ids=["teacache", "fbcache", "both"])
def test_step_cache_at_threshold_zero_is_the_uncached_run(s2v_pipeline, speech, portrait, config, capsys):
    """The cache manager drives the S2V DiT unchanged (``CacheManager[s2v]``); at threshold 0 it
    computes every step, bitwise the plain run, and reports each clip and their sum, whose
    summary line is the run's only one; the notice that FBCache takes precedence is given once."""
    run = {**RUN, "sampling_steps": 3}
    plain = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, progress=False, **run)
    assert s2v_pipeline.cache_report() == {}
    cached = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, progress=False,
                                   cache=config, **run)
    assert torch.equal(cached, plain)
    report = s2v_pipeline.cache_report()
    clips = s2v_pipeline.clip_cache_reports
    assert len(clips) == RUN["num_clip"] and all(clip["s2v"]["cond"]["computed"] == 3 for clip in clips)
    assert list(report) == ["s2v"] and report["s2v"]["cond"]["computed"] == 3 * RUN["num_clip"]
    out = capsys.readouterr().out
    [summary] = [line for line in out.splitlines() if "summary:" in line]
    assert summary.startswith(f"CacheManager[s2v] summary: cond steps={3 * RUN['num_clip']} ")
    assert out.count("FBCache takes precedence") == (config.fbcache and config.teacache)


def test_step_cache_without_guidance_runs_the_cond_branch_alone(s2v_pipeline, speech, portrait):
    """guide_scale 1: no uncond branch (as the official pipeline); the cache follows that, exact at
    threshold 0 and skipping every step but the forced ones at a large one."""
    run = {**RUN, "sampling_steps": 4, "num_clip": 1, "guide_scale": 1.0}
    plain = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, progress=False, **run)
    exact = CacheConfig(fbcache=True, fb_thresh=0.0)
    cached = s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, progress=False,
                                   cache=exact, **run)
    assert torch.equal(cached, plain)
    assert set(s2v_pipeline.cache_report()["s2v"]) == {"cond", "residual_bytes"}
    loose = CacheConfig(fbcache=True, fb_thresh=1e9)
    s2v_pipeline.generate("a woman speaks", image=portrait, audio=speech, progress=False, cache=loose, **run)
    cond = s2v_pipeline.cache_report()["s2v"]["cond"]
    assert (cond["computed"], cond["skipped"]) == (2, 2)
    report = s2v_pipeline.last_report
    assert report.step_cache == s2v_pipeline.cache_report()
    # Block 0 ran in the forwards FBCache skipped: less than half of the blocks' work was saved.
    assert 0 < cond["work_saved"] < 0.5
    line = f"step cache: forwards skipped s2v 2 of 4 ({cond['work_saved']:.0%} of the blocks' work saved)"
    assert report.summary().splitlines()[-1] == report.step_cache_line() == line


@pytest.mark.parametrize(("height", "width", "area"), [
    (720, 1280, 1280 * 720), (1280, 720, 704 * 1024), (56, 72, 64 * 64), (1000, 333, 832 * 480),
    (480, 480, 1024 * 704), (4000, 90, 720 * 1280), (77, 91, 1280 * 704),
])
def test_output_size_is_the_official(height, width, area):
    official = speech2video().WanS2V.get_size_less_than_area
    assert s2v_output_size(height, width, area) == official(None, height, width, target_area=area)
