"""Writing generated videos: H.264 MP4 files through imageio-ffmpeg's bundled ffmpeg, with the
driving speech muxed in for s2v-14B and the settings that made them stored in them; reading those
settings back.

Used by the CLI (and by API users who want the same files); the pipelines return tensors and
know nothing of files. Frames are converted and encoded exactly as the official
``wan.utils.utils.save_video`` does through imageio (same quantisation, codec, quality and
conversion to YUV), so a file decodes to the official one's frames for the same video; the file
adds what the official one lacks: colour tags and its index first. ffmpeg runs here rather than
inside imageio so that its output can be kept off the terminal and reported in the error instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from wan_runtime.audio_io import ffmpeg_exe, ffmpeg_path, write_wav
from wan_runtime.errors import InputError
from wan_runtime.input_files import file_problem

# The official writer's settings: imageio's libx264 at quality 8, which it passes as ``-crf 10``,
# in yuv420p, with sizes that are not multiples of 16 scaled up to the next ones.
CODEC = "libx264"
CRF = 10
MACRO_BLOCK = 16
# What the frames' colours are: ffmpeg converts the RGB frames to YUV with the BT.601 matrix (its
# default, the official writer's) and leaves the file untagged, which players read as BT.709 from
# HD sizes on (shifting reds and greens). The tags name the matrix and the frames' sRGB colours;
# the pixels are the official writer's. (A filter: libx264 takes the frames' own tags over
# ``-color_primaries`` and the like.)
COLOUR_TAGS = "setparams=colorspace=smpte170m:color_primaries=bt709:color_trc=bt709:range=tv"
# The index before the frames, so that a browser plays the file while it downloads.
FAST_START = ("-movflags", "+faststart")
# Sound codecs that MP4 players read, copied into the file as they are; others (e.g. the PCM of WAV
# files, which ffmpeg would store as ``ipcm``) are encoded as AAC.
PLAYABLE_AUDIO = ("aac", "mp3")
# The MP4 tag that holds the generation settings (ffmpeg maps it to the ``©cmt`` atom).
METADATA_KEY = "comment"
# The characters that the ffmetadata format escapes with a backslash.
_FFMETADATA_SPECIAL = re.compile(r"([=;#\\\n])")
_LOG_PREFIX = re.compile(r"^\[[^]]* @ 0x[0-9a-f]+\] ")


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
    keep_existing: bool = False,
) -> Path:
    """Write ``video`` ([3, F, H, W] in [-1, 1]) to ``path`` as an H.264 MP4 at ``fps``; returns
    the path written: ``path``, or with ``keep_existing`` where a file has that name, the first
    free ``<stem>_<n>.mp4``, claimed so that two writers at once never take one name.

    ``metadata`` is stored as JSON in the file's ``comment`` tag. ``audio`` (an audio file, or
    mono 16 kHz samples) becomes the file's sound track, cut to the video's length: copied as it
    is where MP4 holds its codec, else encoded as AAC. The file is written under a hidden
    temporary name in the same folder and renamed when complete, so an interrupted or failed
    write leaves no file at ``path`` (an existing one is kept) and the temporary files are
    removed. A failed write, muxing included, raises ``OSError`` saying why; ffmpeg's own output
    goes into that message, not to the terminal.
    """
    path = Path(path)
    frames = video_to_frames(video)
    if not path.parent.is_dir():
        raise OSError(f"could not write {path}: the folder {path.parent} does not exist; create it first")
    # Hidden names that start like the video's (what a killed run left is then known) and fit
    # wherever its name fits; ffmpeg creates the videos itself, so they get the usual permissions.
    stem = os.fsencode(path.stem)[:max(0, name_max(path.parent) - _OWN_BYTES)].decode(errors="ignore")
    token = secrets.token_hex(4)
    tmp, silent, wav, tags = (path.parent / f".{stem}.{token}.{kind}" for kind in
                              ("partial.mp4", "video.mp4", "audio.wav", "metadata.txt"))
    try:
        # A file rather than a ``-metadata`` argument: Linux caps one argument at 128 KiB.
        tags.write_text(_ffmetadata({METADATA_KEY: json.dumps(dict(metadata), ensure_ascii=False)}),
                        encoding="utf-8", newline="\n")
        _encode(frames, fps, tags, tmp)
        if audio is not None:
            os.replace(tmp, silent)
            sound = write_wav(audio, wav) if isinstance(audio, np.ndarray) else Path(audio)
            _mux(silent, sound, tmp, seconds=len(frames) / fps)
        _sync(tmp)
        if keep_existing:
            path = _claim(tmp, path)
        else:
            os.replace(tmp, path)
    except Exception as err:
        _remove(tmp, silent, wav, tags)
        raise OSError(f"could not write {path}: {str(err).strip() or type(err).__name__}") from err
    except BaseException:  # Ctrl-C, SIGTERM: remove the partial files, keep the interruption
        _remove(tmp, silent, wav, tags)
        raise
    _remove(silent, wav, tags)
    with contextlib.suppress(OSError):  # the rename too (not every file system syncs a folder)
        _sync(path.parent)
    return path


# The bytes of a temporary file's name besides the video's stem (".", ".", the token, ".", the kind).
_OWN_BYTES = 23


def _claim(tmp: Path, path: Path) -> Path:
    """Give the file ``tmp`` the name ``path``, or the first free ``<stem>_<n><suffix>``, never
    replacing a file: a hard link fails where the name is taken, whoever took it."""
    name, count = path, 0
    while True:
        try:
            os.link(tmp, name)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a check, then the rename
            if not name.exists():
                os.replace(tmp, name)
                return name
        else:
            tmp.unlink()
            return name
        count += 1
        name = path.with_stem(f"{path.stem}_{count}")


def name_max(folder: Path) -> int:
    """The longest file name ``folder``'s file system takes, in bytes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or no answer
        return 255


def _sync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to the disk, so that a crash after the rename leaves
    the whole video or the older file, not an empty one."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def writer_problem() -> str | None:
    """What keeps ffmpeg from writing the videos (none to be found or run, or one without the
    libx264 encoder), with the fix, or None: a run of ``ffmpeg -encoders`` (milliseconds), so that
    a run is refused before its minutes of work rather than when it writes."""
    chosen = os.environ.get("IMAGEIO_FFMPEG_EXE")
    fix = (f"unset IMAGEIO_FFMPEG_EXE (it names {chosen}) to use the ffmpeg that imageio-ffmpeg bundles, or "
           "name an ffmpeg built with libx264" if chosen else
           "reinstall imageio-ffmpeg, which bundles one (pip install --force-reinstall imageio-ffmpeg)")
    try:
        exe = ffmpeg_exe()
    except RuntimeError:
        return f"no ffmpeg to write the video with; {fix}"
    problem = _encoder_problem(exe)
    return None if problem is None else f"ffmpeg {exe} {problem}; {fix}"


@functools.lru_cache(maxsize=4)
def _encoder_problem(exe: str) -> str | None:
    try:
        result = subprocess.run([exe, "-hide_banner", "-nostdin", "-encoders"], capture_output=True,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot be run ({err.strerror if isinstance(err, OSError) else 'it did not answer in 60 s'})"
    if result.returncode != 0:
        return f"fails {_exit_status(result.returncode)} ({_complaint(result.stderr)})"
    if not re.search(rb"\s" + CODEC.encode() + rb"\s", result.stdout):
        return f"has no {CODEC} encoder, which the videos are written with"
    return None


def read_mp4_settings(path: str | Path, label: str = "video") -> dict[str, object]:
    """The settings ``write_mp4`` stored in the MP4 at ``path`` (the JSON object of its ``comment``
    tag). Raises ``InputError`` naming ``label`` for a missing file, one ffmpeg cannot read, and
    one that holds no wan_runtime settings."""
    comment = mp4_tags(path, label).get(METADATA_KEY)
    try:
        settings = None if comment is None else json.loads(comment)
    except json.JSONDecodeError:
        settings = None
    if not isinstance(settings, dict) or not str(settings.get("software", "")).startswith("wan_runtime "):
        raise InputError(f"{label} {path} holds no wan_runtime settings (its comment tag is not ours); give "
                         "an MP4 written by python -m wan_runtime.generate")
    return settings


def mp4_tags(path: str | Path, label: str = "video") -> dict[str, str]:
    """The file-wide metadata tags of the video at ``path``, by name. Raises ``InputError``
    naming ``label`` for a missing file and one ffmpeg cannot read."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise InputError(f"{label} {path} {problem}; give an MP4 written by python -m wan_runtime.generate")
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", ffmpeg_path(path), "-f", "ffmetadata", "-"]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise InputError(f"{label} {path} cannot be read as a video (ffmpeg: {_complaint(result.stderr)})")
    return _global_tags(result.stdout.decode("utf-8", errors="replace"))


def _global_tags(text: str) -> dict[str, str]:
    """The file-wide tags of ffmpeg's ffmetadata output ``text``: ``key=value`` lines (``=;#\\`` and
    newlines escaped with a backslash; lines starting with ``;`` or ``#`` are comments) up to its
    first section (``[STREAM]``, ``[CHAPTER]``)."""
    tags: dict[str, str] = {}
    key: str | None = None
    field: list[str] = []
    escaped = comment = False
    for char in text + "\n":
        if char == "\n" and not escaped:
            if key is not None and not comment:
                tags.setdefault(key, "".join(field))
            key, field, comment = None, [], False
        elif comment:
            continue
        elif escaped:
            field.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif key is None and not field and char in ";#[":
            if char == "[":
                break
            comment = True
        elif char == "=" and key is None:
            key, field = "".join(field), []
        else:
            field.append(char)
    return tags


def _encode(frames: np.ndarray, fps: int, tags: Path, out: Path) -> None:
    """uint8 ``frames`` [F, H, W, 3] into the MP4 ``out`` with the ffmetadata file ``tags`` as its
    metadata, by the command imageio's writer runs for the official settings."""
    height, width = frames.shape[1:3]
    command = [ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
               "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()), "-i", "-",
               "-f", "ffmetadata", "-i", ffmpeg_path(tags), "-map", "0:v:0", "-map_metadata", "1",
               "-an", "-vcodec", CODEC, "-pix_fmt", "yuv420p", "-crf", str(CRF), *FAST_START]
    scaled = (-(-width // MACRO_BLOCK) * MACRO_BLOCK, -(-height // MACRO_BLOCK) * MACRO_BLOCK)
    scale = [] if scaled == (width, height) else [f"scale={scaled[0]}:{scaled[1]}"]
    command += ["-vf", ",".join([*scale, COLOUR_TAGS])]
    # ``-f mp4``: the temporary suffix must not decide the container.
    command += ["-v", "error", "-f", "mp4", ffmpeg_path(out)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            # One flat view of the frames: no copy, and ffmpeg stopping early is not an error here
            # but seen in its exit status.
            process.communicate(memoryview(frames).cast("B"))
        finally:
            if process.returncode is None:  # interrupted: ffmpeg would go on writing
                process.kill()
                process.wait()
        if process.returncode != 0:
            log.seek(0)
            raise OSError(f"ffmpeg failed {_exit_status(process.returncode)} ({_complaint(log.read())})")


def _mux(video: Path, audio: Path, out: Path, seconds: float) -> None:
    """``video``'s stream and metadata with ``audio``'s first sound stream, cut at ``seconds``, into
    the MP4 ``out``: the audio copied when it is AAC or MP3, else (or when copying fails) encoded
    as AAC."""
    streams = _streams(audio)
    sounds = [line.split("Audio:", 1)[1].split()[0].rstrip(",") for line in streams if "Audio:" in line]
    # A readable file without sound says so; an unreadable one gets ffmpeg's reason from the mux.
    if streams and not sounds:
        raise OSError(f"muxing the audio {audio} failed: it has no audio stream")
    codec = sounds[0] if sounds else None
    failures = []
    for method in ("copy", "aac") if codec in PLAYABLE_AUDIO else ("aac",):
        command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", ffmpeg_path(video),
                   "-i", ffmpeg_path(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", method,
                   "-t", f"{seconds:.6f}", "-map_metadata", "0", *FAST_START, "-f", "mp4", ffmpeg_path(out)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode == 0:
            return
        failures.append(_complaint(result.stderr))
    raise OSError(f"muxing the audio {audio} failed (ffmpeg: {failures[-1]})")


def _streams(path: Path) -> list[str]:
    """ffmpeg's description of each stream of ``path`` (``Stream #0:0: Audio: aac ...``); none for a
    file ffmpeg cannot read."""
    banner = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", ffmpeg_path(path)],
                            capture_output=True, check=False).stderr.decode(errors="replace")
    return [line.strip() for line in banner.splitlines() if line.strip().startswith("Stream #")]


def _ffmetadata(tags: Mapping[str, str]) -> str:
    """``tags`` in ffmpeg's ffmetadata format."""
    def escape(text: str) -> str:
        return _FFMETADATA_SPECIAL.sub(r"\\\1", text)

    return ";FFMETADATA1\n" + "".join(f"{escape(key)}={escape(value)}\n" for key, value in tags.items())


def _complaint(stderr: bytes) -> str:
    """The last lines of ffmpeg's log (the cause, then what became of it: "Unknown encoder
    'libx264'", then "Encoder not found"), without their ``[component @ address]`` prefixes."""
    lines = [_LOG_PREFIX.sub("", line.strip()) for line in stderr.decode(errors="replace").splitlines()]
    # Each line once, where it came last: the last line says what became of the failure.
    kept = list(dict.fromkeys(line for line in reversed(lines) if line))[:_COMPLAINT_LINES][::-1]
    return " / ".join(kept)[-400:] if kept else "no reason given"


_COMPLAINT_LINES = 3
# What a signal that stops ffmpeg says of the machine, where it is not the user's doing.
_SIGNAL_CAUSES = {
    signal.SIGXFSZ: "the file-size limit (ulimit -f) was reached",
    signal.SIGKILL: "killed, as the kernel kills a process when the machine runs out of memory",
}


def _exit_status(code: int) -> str:
    """ffmpeg's exit ``code`` in words: its status, or the signal that stopped it and why."""
    if code >= 0:
        return f"with exit status {code}"
    try:
        stop = signal.Signals(-code)
    except ValueError:
        return f"on signal {-code}"
    cause = _SIGNAL_CAUSES.get(stop)
    return f"on signal {stop.name}" + ("" if cause is None else f": {cause}")


def _remove(*paths: Path) -> None:
    """Delete ``paths`` where they exist. Best effort: this runs while an error or interruption is
    being reported, which a failure to clean up must not replace."""
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)
