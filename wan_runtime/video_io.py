"""Writing generated videos: H.264 MP4 files through imageio and its bundled ffmpeg.

Used by the CLI only; the pipelines return tensors and know nothing of files. Frames are
converted and encoded exactly as the official ``wan.utils.utils.save_video`` does (same
quantisation, codec and quality), so a file matches the official one for the same video.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import torch

# The official writer's settings: libx264 at imageio quality 8 (ffmpeg -crf 10), yuv420p.
CODEC = "libx264"
QUALITY = 8
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


def write_mp4(video: torch.Tensor, path: str | Path, fps: int, metadata: Mapping[str, object]) -> Path:
    """Write ``video`` ([3, F, H, W] in [-1, 1]) to ``path`` as an H.264 MP4 at ``fps``.

    ``metadata`` is stored as JSON in the file's ``comment`` tag. The file is written under a
    hidden temporary name in the same folder and renamed when complete, so an interrupted or
    failed write leaves no file at ``path`` (an existing one is kept) and the temporary file is
    removed. A failed write raises ``OSError`` saying why.
    """
    path = Path(path)
    frames = video_to_frames(video)
    # A fresh name that ffmpeg creates itself, so the file gets the usual permissions.
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.partial.mp4"
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
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not write {path}: {_reason(err)}") from err
    except BaseException:  # Ctrl-C, SIGTERM: remove the partial file, keep the interruption
        tmp.unlink(missing_ok=True)
        raise
    return path


def _reason(err: Exception) -> str:
    # imageio-ffmpeg's errors carry the whole ffmpeg command line (with our metadata) followed
    # by ffmpeg's own output; the first line and ffmpeg's output are what explain the failure.
    text = str(err)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    _, marker, ffmpeg_output = text.partition("FFMPEG STDERR OUTPUT:")
    detail = " ".join(ffmpeg_output.split())
    return f"{first} (ffmpeg: {detail})" if marker and detail else first
