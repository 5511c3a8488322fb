"""Every path handed to ffmpeg is read as a file name, whatever it looks like: a relative name with a
colon (which ffmpeg would take for a protocol, as in ``take:1.mp4``) or one starting with a dash
(an option); and a file without sound given as audio is named as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.cli.helpers import read_settings, read_video
from tests.pipelines.images import write_pose_video
from wan_runtime.audio_io import decode_audio, write_wav
from wan_runtime.errors import InputError
from wan_runtime.pose_video import probe_video, sampled_frames
from wan_runtime.video_io import write_mp4

NAMES = ["take:1", "-take1", "http:take"]


def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_video_is_written_under_a_relative_name(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    path = write_mp4(torch.zeros(3, 4, 32, 32), f"{name}.mp4", fps=16, metadata={"seed": 5})
    frames, _ = read_video(tmp_path / path)
    assert frames.shape == (4, 32, 32, 3) and read_settings(tmp_path / path) == {"seed": 5}
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.mp4"]


@pytest.mark.parametrize("name", NAMES)
def test_audio_file_under_a_relative_name_is_decoded_and_muxed(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    speech = write_wav(_speech(1.0), f"{name}.wav")
    assert decode_audio(speech).size == 16000
    write_mp4(torch.zeros(3, 8, 32, 32), f"{name}.mp4", fps=16, metadata={}, audio=speech)
    assert decode_audio(f"{name}.mp4").size == 8000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{name}.wav", f"{name}.mp4"])


@pytest.mark.parametrize("name", NAMES)
def test_pose_video_under_a_relative_name_is_read(tmp_path, monkeypatch, name):
    write_pose_video(tmp_path / f"{name}.mp4", 32, 48, frames=5, fps=30)
    monkeypatch.chdir(tmp_path)
    info = probe_video(f"{name}.mp4")
    assert (info.fps, info.width, info.height) == (30.0, 32, 48)
    assert len(list(sampled_frames(f"{name}.mp4", interval=2))) == 3


def test_video_without_sound_is_refused_as_audio(tmp_path):
    silent = write_mp4(torch.zeros(3, 4, 32, 32), tmp_path / "silent.mp4", fps=16, metadata={})
    with pytest.raises(InputError) as raised:
        decode_audio(silent, "--audio")
    assert str(raised.value) == (
        f"--audio {silent} has no audio stream; pass a WAV, MP3 or FLAC file, or a video with sound"
    )
