"""The MP4 writer: frames as the official writer quantises them, settings in the metadata, and
nothing left behind by a failed write."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from tests.cli.helpers import read_settings, read_video
from wan_runtime import video_io
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


def _fake_ffmpeg(tmp_path, monkeypatch, script: str) -> None:
    """Make ``script`` (sh, given ffmpeg's arguments) the ffmpeg that imageio-ffmpeg finds."""
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))


def test_failed_write_leaves_nothing_and_keeps_an_older_file(tmp_path, monkeypatch, capfd):
    """ffmpeg fails half-way: its partial output, named after the video, is removed, and its last
    complaints (the cause, then what became of it) are in the one error, not on the terminal."""
    target = tmp_path / "out.mp4"
    target.write_bytes(b"an earlier result")
    _fake_ffmpeg(tmp_path, monkeypatch, """for last; do :; done
head -c 100 > /dev/null
printf partial > "$last"
basename "$last" > written_as
echo "[mp4 @ 0x55d0c0ffee00] Failed to write the index" >&2
echo "[aost#0:0/copy @ 0x55d0c0ffee00] Error muxing a packet" >&2
echo "[out#0/mp4 @ 0x55d0c0ffee00] Error writing trailer: No space left on device" >&2
echo "[out#0/mp4 @ 0x55d0c0ffee00] Error writing trailer: No space left on device" >&2
exit 1
""")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError) as raised:
        write_mp4(torch.zeros(3, 9, 32, 32), target, fps=24, metadata={})
    assert str(raised.value) == (
        f"could not write {target}: ffmpeg failed with exit status 1 (Failed to write the index / Error "
        "muxing a packet / Error writing trailer: No space left on device)"
    )
    assert capfd.readouterr().err == ""
    assert target.read_bytes() == b"an earlier result"
    assert (tmp_path / "written_as").read_text().startswith(".out.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg", "out.mp4", "written_as"]


def test_the_complaint_ends_with_ffmpegs_last_line():
    log = b"[out @ 0x1] Error A\nframe=1\nframe=2\nsize=3\n[out @ 0x1] Error A\n"
    assert video_io._complaint(log) == "frame=2 / size=3 / Error A"
    assert video_io._complaint(b"\n \n") == "no reason given"


def test_a_missing_or_unfit_ffmpeg_is_told_with_the_fix(tmp_path, monkeypatch):
    assert video_io.writer_problem() is None
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "nowhere"))
    assert video_io.writer_problem() == (
        f"ffmpeg {tmp_path / 'nowhere'} cannot be run (No such file or directory); unset IMAGEIO_FFMPEG_EXE "
        f"(it names {tmp_path / 'nowhere'}) to use the ffmpeg that imageio-ffmpeg bundles, or name an ffmpeg "
        "built with libx264")
    _fake_ffmpeg(tmp_path, monkeypatch, "echo ' V....D libx265   libx265 H.265 / HEVC'\n")
    assert video_io.writer_problem().startswith(
        f"ffmpeg {tmp_path / 'ffmpeg'} has no libx264 encoder, which the videos are written with; unset")
    (tmp_path / "broken").mkdir()
    _fake_ffmpeg(tmp_path / "broken", monkeypatch, "echo 'cannot load libavcodec.so' >&2\nexit 127\n")
    assert "fails with exit status 127 (cannot load libavcodec.so)" in video_io.writer_problem()


@pytest.mark.parametrize(("ending", "told"), [
    ("exit 1", "with exit status 1"),
    ("kill -XFSZ $$", r"on signal SIGXFSZ: the file-size limit \(ulimit -f\) was reached"),
])
def test_ffmpeg_failing_at_exit_is_an_error(tmp_path, monkeypatch, ending, told):
    """An ffmpeg that reads every frame and then fails silently, or is stopped by a signal (which
    is named, with what it says of the machine), must still give an error, and no file."""
    _fake_ffmpeg(tmp_path, monkeypatch, f"cat > /dev/null\n{ending}\n")
    with pytest.raises(OSError, match=rf"could not write .*out.mp4: ffmpeg failed {told} \(no reason given"):
        write_mp4(torch.zeros(3, 5, 32, 32), tmp_path / "out.mp4", fps=24, metadata={})
    assert [p.name for p in tmp_path.iterdir()] == ["ffmpeg"]


def test_ffmpeg_error_is_in_the_message_not_on_the_terminal(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(video_io, "CODEC", "no_such_encoder")
    with pytest.raises(OSError, match=r"could not write .*out.mp4: ffmpeg failed with exit status \d+ "
                                      r"\(.*Encoder not found\)$"):
        write_mp4(torch.zeros(3, 3, 32, 32), tmp_path / "out.mp4", fps=16, metadata={"seed": 1})
    assert capfd.readouterr().err == ""
    assert list(tmp_path.iterdir()) == []


def test_failing_cleanup_keeps_the_error(tmp_path, monkeypatch):
    """Removing the temporary files fails too (e.g. ENAMETOOLONG): the write's own error is raised."""
    def unlink(self, missing_ok=False):
        raise OSError(errno.ENAMETOOLONG, "File name too long", str(self))

    monkeypatch.setattr(video_io, "CODEC", "no_such_encoder")
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError, match=r"could not write .*out.mp4: ffmpeg failed .*Encoder not found"):
        write_mp4(torch.zeros(3, 3, 32, 32), tmp_path / "out.mp4", fps=16, metadata={})


def test_interrupted_write_stops_ffmpeg_and_leaves_nothing(tmp_path, monkeypatch):
    started = []
    real_communicate = subprocess.Popen.communicate

    def interrupted(self, *args, **kwargs):
        started.append(self)
        if len(started) == 1:
            raise KeyboardInterrupt
        return real_communicate(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_mp4(torch.zeros(3, 3, 32, 32), tmp_path / "out.mp4", fps=16, metadata={})
    assert started[0].returncode is not None
    assert list(tmp_path.iterdir()) == []


def test_a_default_name_taken_gets_a_number(tmp_path, monkeypatch):
    """Two runs of one prompt ending in one second (two seeds on two GPUs) keep both videos: a
    name the user did not give replaces nothing, and two writers never claim one name."""
    monkeypatch.chdir(tmp_path)
    name = Path("ti2v-5B_1280*704_1_cat_20250728_000000.mp4")
    video = torch.zeros(3, 1, 16, 16)
    assert write_mp4(video, name, fps=16, metadata={"n": 1}, keep_existing=True) == name
    assert write_mp4(video, name, fps=16, metadata={"n": 2}, keep_existing=True) == Path(
        "ti2v-5B_1280*704_1_cat_20250728_000000_1.mp4")
    # Without hard links (a FAT or network drive) the name is checked, then taken.
    monkeypatch.setattr("os.link", lambda *args: (_ for _ in ()).throw(PermissionError(1, "no links")))
    assert write_mp4(video, name, fps=16, metadata={"n": 3}, keep_existing=True) == Path(
        "ti2v-5B_1280*704_1_cat_20250728_000000_2.mp4")
    assert [read_settings(path)["n"] for path in sorted(tmp_path.glob("*.mp4"))] == [1, 2, 3]
    assert not list(tmp_path.glob(".*"))


def test_colours_are_tagged_and_the_index_comes_first(tmp_path):
    """The BT.601 matrix ffmpeg converts with is named (untagged, players take HD video for BT.709),
    and the index precedes the frames, for playing while downloading."""
    path = write_mp4(torch.zeros(3, 5, 32, 48), tmp_path / "out.mp4", fps=16, metadata={})
    from wan_runtime.audio_io import ffmpeg_exe

    banner = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True).stderr
    assert b"yuv420p(tv, smpte170m/bt709/bt709, progressive)" in banner
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_the_video_is_on_the_disk_before_it_is_renamed(tmp_path, monkeypatch):
    synced, replaced = [], []
    real_fsync, real_replace = video_io.os.fsync, video_io.os.replace

    def fsync(descriptor):
        synced.append(Path(f"/proc/self/fd/{descriptor}").resolve())
        real_fsync(descriptor)

    def replace(source, target):
        replaced.append((Path(source), list(synced)))
        real_replace(source, target)

    monkeypatch.setattr(video_io.os, "fsync", fsync)
    monkeypatch.setattr(video_io.os, "replace", replace)
    write_mp4(torch.zeros(3, 3, 32, 32), tmp_path / "out.mp4", fps=16, metadata={})
    [(source, before)] = replaced
    assert before == [source.resolve()] and synced == [source.resolve(), tmp_path.resolve()]


@pytest.mark.parametrize("size", [(48, 64), (40, 72)])
def test_encoded_as_the_official_imageio_writer(tmp_path, size):
    """The same frames as imageio's writer with the official settings, also for a size that is not a
    multiple of 16 (which both scale up)."""
    video = torch.rand(3, 4, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with imageio.get_writer(tmp_path / "official.mp4", fps=16, codec="libx264", quality=8) as writer:
        for frame in video_to_frames(video):
            writer.append_data(frame)
    ours = write_mp4(video, tmp_path / "ours.mp4", fps=16, metadata={})
    official, _ = read_video(tmp_path / "official.mp4")
    frames, fps = read_video(ours)
    assert fps == 16 and frames.shape == official.shape
    np.testing.assert_array_equal(frames, official)


@pytest.mark.parametrize("with_audio", [False, True])
def test_longest_file_name_is_written(tmp_path, with_audio):
    """A 255-byte name (the most a file system takes): the temporary names are no longer."""
    target = tmp_path / ("v" * 251 + ".mp4")
    audio = _speech(1.0) if with_audio else None
    write_mp4(torch.zeros(3, 4, 32, 32), target, fps=16, metadata={"seed": 3}, audio=audio)
    assert read_settings(target) == {"seed": 3}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("with_audio", [False, True])
def test_metadata_longer_than_an_argument_is_kept(tmp_path, with_audio):
    """Linux caps one command-line argument at 128 KiB; the settings may be longer, with every
    character that the ffmetadata format escapes."""
    prompt = ("一只猫 = a cat; # not a comment \\ back\nslash\r\t \"quoted\" " * 5000)[:200_000]
    settings = {"prompt": prompt, "seed": 7}
    audio = _speech(1.0) if with_audio else None
    path = write_mp4(torch.zeros(3, 4, 32, 32), tmp_path / "out.mp4", fps=16, metadata=settings, audio=audio)
    assert read_settings(path) == settings
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


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
    with pytest.raises(OSError, match="muxing the audio .*silent.mp4 failed: it has no audio stream"):
        write_mp4(torch.zeros(3, 4, 32, 32), tmp_path / "out.mp4", fps=16, metadata={}, audio=not_audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent.mp4"]


def test_unreadable_audio_gets_ffmpegs_reason(tmp_path):
    garbage = tmp_path / "bad.wav"
    garbage.write_bytes(b"not audio at all" * 64)
    with pytest.raises(OSError, match=r"muxing the audio .*bad.wav failed \(ffmpeg: .*Invalid data"):
        write_mp4(torch.zeros(3, 4, 32, 32), tmp_path / "out.mp4", fps=16, metadata={}, audio=garbage)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav"]


def test_missing_folder_or_audio_file_is_named(tmp_path):
    with pytest.raises(OSError, match=r"could not write .*out.mp4: the folder .*missing does not exist"):
        write_mp4(torch.zeros(3, 4, 32, 32), tmp_path / "missing" / "out.mp4", fps=16, metadata={})
    with pytest.raises(OSError, match=r"muxing the audio .*talk.wav failed \(ffmpeg: .*No such file"):
        write_mp4(torch.zeros(3, 4, 32, 32), tmp_path / "out.mp4", fps=16, metadata={},
                  audio=tmp_path / "talk.wav")
    assert list(tmp_path.iterdir()) == []
