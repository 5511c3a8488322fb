"""Reading a pose video for s2v-14B with the bundled ffmpeg: its frame rate, and its frames one at
a time, every ``interval``-th from the first.

The official pipeline reads pose videos with decord (``WanS2V.read_last_n_frames(...,
reverse=True)``). Here imageio-ffmpeg's ffmpeg decodes them to RGB bytes as decord does: every
decoded frame once (no frame-rate conversion) and without applying rotation metadata, which
decord ignores. Frames are streamed, so only the ones kept are held, and only until the caller
is done with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import imageio_ffmpeg
import numpy as np

from wan_runtime.audio_io import ffmpeg_path
from wan_runtime.errors import InputError
from wan_runtime.input_files import require_file

# ffmpeg's defaults duplicate or drop frames to reach a constant rate and rotate by the
# metadata; decord's frame indices are the decoded frames as they are.
# The largest frame decoded: past 8K video's 33 million pixels, with room to spare.
MAX_FRAME_PIXELS = 2**26
_INPUT_PARAMS = ["-noautorotate"]
_OUTPUT_PARAMS = ["-fps_mode", "passthrough"]
# What imageio-ffmpeg raises for a file ffmpeg cannot open or decode, and its header parser for
# output it does not expect (e.g. a file without a video stream).
_READ_ERRORS = (OSError, RuntimeError, IndexError, AttributeError, ValueError)
# The lines of ffmpeg's log that say what went wrong; the rest is its banner and progress.
_PROBLEM = re.compile(r"error|invalid|not found|no such|does not contain|no packets|unsupported|could not",
                      re.IGNORECASE)
_LOG_PREFIX = re.compile(r"^\[[^]]* @ 0x[0-9a-f]+\] ")


class VideoInfo(NamedTuple):
    """What ``probe_video`` found: the average frame rate and the frame size in pixels."""

    fps: float
    width: int
    height: int


def probe_video(path: str | Path, label: str = "pose_video") -> VideoInfo:
    """The frame rate and size of video file ``path``, after decoding its first frame.

    Raises ``InputError`` naming ``label`` for a missing file, one ffmpeg cannot open or decode,
    one without frames, or one whose frame rate ffmpeg does not report.
    """
    path = require_file(path, label, "an MP4, MOV, WebM or other video file")
    with closing(_frames(path, label)) as frames:
        info = next(frames)
        if next(frames, None) is None:
            raise InputError(f"{label} {path} has no video frames; pass a video with at least one frame")
    if not info.fps > 0:
        raise InputError(
            f"{label} {path}: ffmpeg reports no frame rate for it, so which of its frames to take "
            "cannot be chosen; re-encode it at a constant rate (e.g. ffmpeg -i IN -r 30 OUT.mp4)"
        )
    return info


def frame_interval(fps: float, target_fps: int) -> int:
    """Every how many frames of a video at ``fps`` one is taken for a video at ``target_fps``:
    ``max(1, round(fps / target_fps))``, with Python's half-to-even rounding as the official."""
    return max(1, round(fps / target_fps))


def sampled_frames(path: str | Path, interval: int, label: str = "pose_video") -> Iterator[np.ndarray]:
    """Frames 0, ``interval``, ``2 * interval``, ... of video file ``path`` to its end, each uint8
    [H, W, 3] RGB. Close the iterator (or exhaust it) to stop ffmpeg. ``InputError`` as
    ``probe_video`` when ffmpeg fails."""
    with closing(_frames(Path(path), label)) as frames:
        next(frames)
        for index, frame in enumerate(frames):
            if index % interval == 0:
                # A writable copy: ffmpeg's bytes are read-only, and torch warns on those.
                yield frame.copy()


def _frames(path: Path, label: str) -> Iterator[VideoInfo | np.ndarray]:
    """``VideoInfo``, then every decoded frame as uint8 [H, W, 3]."""
    reader = imageio_ffmpeg.read_frames(ffmpeg_path(path), input_params=_INPUT_PARAMS,
                                        output_params=_OUTPUT_PARAMS)
    with closing(reader):
        try:
            meta = next(reader)
            width, height = meta["size"]
            # Before a frame is decoded: a crafted file's frames may each take gigabytes.
            if width * height > MAX_FRAME_PIXELS:
                raise InputError(f"{label} {path} has frames of {width}x{height} pixels, more than the "
                                 f"{MAX_FRAME_PIXELS:,} the runtime decodes; scale it down (each frame is "
                                 "resized to the video's size anyway)")
            yield VideoInfo(float(meta["fps"]), width, height)
            for data in reader:
                yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
        except _READ_ERRORS as err:
            # What ffmpeg says of a file without pictures (a sound file) is about the output.
            if "does not contain any stream" in str(err):
                raise InputError(f"{label} {path} has no video stream; pass an MP4, MOV, WebM or other video "
                                 "file") from err
            reason = _problems(str(err)) or "no reason given"
            raise InputError(
                f"{label} {path} cannot be decoded by ffmpeg ({reason}); pass an MP4, MOV, WebM or other "
                "video file"
            ) from err


def _problems(message: str) -> str:
    """The first and the last of ffmpeg's complaints in an imageio-ffmpeg error ``message`` (the
    cause and what became of it), without their ``[component @ address]`` prefix."""
    log = message.split("=== stderr ===")[-1]
    lines = (_LOG_PREFIX.sub("", line.strip()) for line in log.splitlines())
    found = list(dict.fromkeys(line for line in lines if _PROBLEM.search(line)))
    return "; ".join(found[:1] + found[1:][-1:])[:300]
