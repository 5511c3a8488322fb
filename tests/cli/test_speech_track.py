"""The sound track of an s2v video: the ``--audio`` file as the run read it, or the samples the
video was made from when the file changed or went during the run."""

from __future__ import annotations

import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from wan_runtime.audio_io import decode_audio, write_wav
from wan_runtime.video_output import _inputs, _speech


def _chirp(seconds: float, pitch: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


@pytest.fixture
def speech(tmp_path):
    path = write_wav(_chirp(0.5, 220), tmp_path / "talk.wav")
    return SimpleNamespace(audio_path=path, audio=decode_audio(path), image_path=None, pose_video=None,
                           loras=())


def test_the_file_as_it_was_read_is_muxed(speech):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _speech(speech) == speech.audio_path


def test_the_demos_sound_is_its_samples(speech):
    demo = SimpleNamespace(audio_path=None, audio=speech.audio)
    assert _speech(demo) is speech.audio


@pytest.mark.parametrize("change", ["removed", "rewritten", "replaced by another format"])
def test_a_file_changed_or_gone_gives_the_samples_the_video_was_made_from(speech, change, tmp_path):
    if change == "removed":
        speech.audio_path.unlink()
    elif change == "rewritten":
        write_wav(_chirp(0.5, 440), speech.audio_path)
    else:
        shutil.copyfile(__file__, speech.audio_path)
    told = f"--audio {speech.audio_path} changed or went since the run read it; the video carries the speech"
    with pytest.warns(UserWarning, match=told):
        assert _speech(speech) is speech.audio


def test_the_stored_digest_is_of_the_sound_the_video_carries(speech):
    digests, audio = _inputs(speech)
    assert audio == speech.audio_path and list(digests) == [str(speech.audio_path.absolute())]
    write_wav(_chirp(0.5, 440), speech.audio_path)
    with pytest.warns(UserWarning, match="changed or went since the run read it"):
        digests, audio = _inputs(speech)
    assert audio is speech.audio and digests == {}
