"""The MP4 writer: frames as the official writer quantises them, settings in the metadata, and
nothing left behind by a failed write."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from tests.cli.helpers import read_settings, read_video
from wan_runtime.video_io import video_to_frames, write_mp4


def test_frames_quantised_as_the_official_save_video():
    video = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]).view(1, 6, 1, 1).expand(3, 6, 1, 1)
    frames = video_to_frames(video)
    assert frames.shape == (6, 1, 1, 3) and frames.dtype == np.uint8
    # (x + 1) / 2 * 255, truncated: 0.5 -> 191.25 -> 191, 0 -> 127.5 -> 127.
    assert frames[:, 0, 0, 0].tolist() == [0, 0, 127, 191, 255, 255]


def test_written_file_decodes_with_its_settings(tmp_path):
    video = torch.linspace(-1, 1, 3 * 9 * 48 * 64).view(3, 9, 48, 64)
    settings = {"prompt": "一只猫 on a \"board\"\nsecond line", "seed": 12, "guide_scale": [3.5, 3.5]}
    path = write_mp4(video, tmp_path / "out.mp4", fps=16, metadata=settings)
    frames, fps = read_video(path)
    assert frames.shape == (9, 48, 64, 3) and fps == 16
    assert read_settings(path) == settings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_failed_write_leaves_nothing_and_keeps_an_older_file(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"an earlier result")
    real_get_writer = imageio.get_writer

    def failing_writer(*args, **kwargs):
        writer = real_get_writer(*args, **kwargs)
        calls = []

        def append_data(frame):
            calls.append(frame)
            if len(calls) == 3:
                raise OSError("disk full")
            type(writer).append_data(writer, frame)

        writer.append_data = append_data
        return writer

    monkeypatch.setattr(imageio, "get_writer", failing_writer)
    with pytest.raises(OSError, match="could not write .*: disk full"):
        write_mp4(torch.zeros(3, 9, 32, 32), target, fps=24, metadata={})
    assert target.read_bytes() == b"an earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_ffmpeg_failing_at_exit_is_an_error(tmp_path, monkeypatch):
    # imageio-ffmpeg ignores ffmpeg's exit status: an ffmpeg that reads every frame and then
    # fails must still give an error, and no file.
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\ncat > /dev/null\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    with pytest.raises(OSError, match=r"could not write .*out.mp4: ffmpeg wrote 0 of 5 frames"):
        write_mp4(torch.zeros(3, 5, 32, 32), tmp_path / "out.mp4", fps=24, metadata={})
    assert [p.name for p in tmp_path.iterdir()] == ["ffmpeg"]


def test_rejects_a_non_video():
    with pytest.raises(ValueError, match=r"\[3, F, H, W\]"):
        video_to_frames(torch.zeros(4, 2, 8, 8))


def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def _audio_stream(path) -> tuple[str, int]:
    """The codec of ``path``'s sound stream and its length in 16 kHz samples."""
    import subprocess

    from wan_runtime.audio_io import decode_audio, ffmpeg_exe

    banner = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True).stderr
    [line] = [x for x in banner.decode(errors="replace").splitlines() if "Audio:" in x]
    return line.split("Audio:")[1].split()[0], decode_audio(path).size


def test_speech_is_muxed_and_cut_to_the_video(tmp_path):
    """Samples (PCM) are encoded as AAC and cut at the video's 9 frames at 16 fps."""
    video = torch.zeros(3, 9, 32, 32)
    path = write_mp4(video, tmp_path / "out.mp4", fps=16, metadata={"seed": 1}, audio=_speech(2.0))
    assert _audio_stream(path) == ("aac", 9 * 1000)
    assert read_settings(path) == {"seed": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_aac_speech_is_copied(tmp_path):
    first = write_mp4(torch.zeros(3, 32, 32, 32), tmp_path / "long.mp4", fps=16, metadata={},
                      audio=_speech(3.0))
    path = write_mp4(torch.zeros(3, 16, 32, 32), tmp_path / "out.mp4", fps=16, metadata={}, audio=first)
    codec, samples = _audio_stream(path)
    # A copied stream is cut at its packets (1024 samples for AAC).
    assert codec == "aac" and abs(samples - 16000) <= 1024


def test_mux_failure_is_an_error_and_leaves_nothing(tmp_path):
    not_audio = tmp_path / "silent.mp4"
    write_mp4(torch.zeros(3, 4, 32, 32), not_audio, fps=16, metadata={})
    with pytest.raises(OSError, match="muxing the audio"):
        write_mp4(torch.zeros(3, 4, 32, 32), tmp_path / "out.mp4", fps=16, metadata={}, audio=not_audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent.mp4"]
