"""Writing generated videos: H.264 MP4 files through imageio and its bundled ffmpeg, with the
driving speech muxed in for s2v-14B.

Used by the CLI only; the pipelines return tensors and know nothing of files. Frames are
converted and encoded exactly as the official ``wan.utils.utils.save_video`` does (same
quantisation, codec and quality), so a file matches the official one for the same video.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import torch

from wan_runtime.audio_io import ffmpeg_exe, write_wav

# The official writer's settings: libx264 at imageio quality 8 (ffmpeg -crf 10), yuv420p.
CODEC = "libx264"
QUALITY = 8
# Sound codecs that MP4 players read, copied into the file as they are; others (e.g. the PCM of WAV
# files, which ffmpeg would store as ``ipcm``) are encoded as AAC.
PLAYABLE_AUDIO = ("aac", "mp3")
# The MP4 tag that holds the generation settings (ffmpeg maps it to the ``©cmt`` atom).
METADATA_KEY = "comment"


def video_to_frames(video: torch.Tensor) -> np.ndarray:
    """A [3, F, H, W] video in [-1, 1] as uint8 frames [F, H, W, 3].

    Values are clamped, mapped to [0, 1] and scaled by 255 with truncation, as the official
    ``save_video`` (via ``torchvision.utils.make_grid(normalize=True)``) does.
    """
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video of shape [3, F, H, W], got {tuple(video.shape)}")
    frames = (video.detach().float().clamp(-1, 1) + 1) / 2
    return (frames * 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous().cpu().numpy()


def write_mp4(
    video: torch.Tensor,
    path: str | Path,
    fps: int,
    metadata: Mapping[str, object],
    audio: str | Path | np.ndarray | None = None,
) -> Path:
    """Write ``video`` ([3, F, H, W] in [-1, 1]) to ``path`` as an H.264 MP4 at ``fps``.

    ``metadata`` is stored as JSON in the file's ``comment`` tag. ``audio`` (an audio file, or
    mono 16 kHz samples) becomes the file's sound track, cut to the video's length: copied as it
    is where MP4 holds its codec, else encoded as AAC. The file is written under a hidden
    temporary name in the same folder and renamed when complete, so an interrupted or failed
    write leaves no file at ``path`` (an existing one is kept) and the temporary files are
    removed. A failed write, muxing included, raises ``OSError`` saying why.
    """
    path = Path(path)
    frames = video_to_frames(video)
    # Fresh names that ffmpeg creates itself, so the file gets the usual permissions.
    token = secrets.token_hex(4)
    tmp = path.parent / f".{path.stem}.{token}.partial.mp4"
    silent = path.parent / f".{path.stem}.{token}.video.mp4"
    wav = path.parent / f".{path.stem}.{token}.audio.wav"
    try:
        comment = json.dumps(dict(metadata), ensure_ascii=False)
        # ``-f mp4``: the temporary suffix must not decide the container.
        writer = imageio.get_writer(
            tmp, format="FFMPEG", fps=fps, codec=CODEC, quality=QUALITY,
            output_params=["-f", "mp4", "-metadata", f"{METADATA_KEY}={comment}"],
        )
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        # imageio-ffmpeg ignores ffmpeg's exit status, so a failed encode is only seen here.
        written = imageio_ffmpeg.count_frames_and_secs(str(tmp))[0] if tmp.is_file() else 0
        if written != len(frames):
            raise OSError(f"ffmpeg wrote {written} of {len(frames)} frames")
        if audio is not None:
            os.replace(tmp, silent)
            sound = write_wav(audio, wav) if isinstance(audio, np.ndarray) else Path(audio)
            _mux(silent, sound, tmp, seconds=len(frames) / fps)
        os.replace(tmp, path)
    except Exception as err:
        _remove(tmp, silent, wav)
        raise OSError(f"could not write {path}: {_reason(err)}") from err
    except BaseException:  # Ctrl-C, SIGTERM: remove the partial files, keep the interruption
        _remove(tmp, silent, wav)
        raise
    _remove(silent, wav)
    return path


def _mux(video: Path, audio: Path, out: Path, seconds: float) -> None:
    """``video``'s stream and metadata with ``audio``'s first sound stream, cut at ``seconds``, into
    the MP4 ``out``: the audio copied when it is AAC or MP3, else (or when copying fails) encoded
    as AAC."""
    failures = []
    codecs = ("copy", "aac") if _audio_codec(audio) in PLAYABLE_AUDIO else ("aac",)
    for codec in codecs:
        command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(video), "-i", str(audio),
                   "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", codec, "-t", f"{seconds:.6f}",
                   "-map_metadata", "0", "-f", "mp4", str(out)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode == 0:
            return
        failures.append(" ".join(result.stderr.decode(errors="replace").split())[-300:])
    raise OSError(f"muxing the audio {audio} failed (ffmpeg: {failures[-1] or 'no reason given'})")


def _audio_codec(audio: Path) -> str | None:
    """The codec of the first sound stream of ``audio``, from ffmpeg's description of the input."""
    banner = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(audio)], capture_output=True,
                            check=False).stderr.decode(errors="replace")
    for line in banner.splitlines():
        if "Audio:" in line:
            return line.split("Audio:", 1)[1].split()[0].rstrip(",")
    return None


def _remove(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _reason(err: Exception) -> str:
    # imageio-ffmpeg's errors carry the whole ffmpeg command line (with our metadata) followed
    # by ffmpeg's own output; the first line and ffmpeg's output are what explain the failure.
    text = str(err)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    _, marker, ffmpeg_output = text.partition("FFMPEG STDERR OUTPUT:")
    detail = " ".join(ffmpeg_output.split())
    return f"{first} (ffmpeg: {detail})" if marker and detail else first
