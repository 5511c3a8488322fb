"""s2v-14B's pose conditioning in pixels: a pose video's frames per clip as the official
``WanS2V.load_pose_cond`` prepares them for the VAE.

The official pipeline takes ``clips * infer_frames`` frames at 16 fps from the video's start,
maps them to [-1, 1], resizes and centre-crops them to the output size, pads the end with frames
of -1 and cuts them into clips; each clip is encoded with its first frame repeated in front.
Here one clip's frames are prepared at a time, each frame resized alone (the same arithmetic per
frame), so a long or large pose video never needs its whole float copy in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from wan_runtime.pipelines.resolution import resize_frames_short_side_and_crop
from wan_runtime.pose_video import VideoInfo, frame_interval, sampled_frames


def pose_clips(
    path: str | Path, video: VideoInfo, clips: int, infer_frames: int, height: int, width: int,
    output_fps: int,
) -> Iterator[torch.Tensor]:
    """For each of ``clips`` clips, its pose frames [3, 1 + infer_frames, height, width], float32
    in [-1, 1] on the CPU: the first frame twice, then the clip's; -1 past the video's end. The
    video's frames (``video``: what ``probe_video`` found for ``path``) are taken at
    ``output_fps``, the generated video's rate."""
    interval = frame_interval(video.fps, output_fps)
    with closing(sampled_frames(path, interval)) as frames:
        for _ in range(clips):
            clip = torch.full((3, 1 + infer_frames, height, width), -1.0)
            for i, frame in enumerate(islice(frames, infer_frames)):
                clip[:, 1 + i] = _frame_to_tensor(frame, height, width)
            clip[:, 0] = clip[:, 1]
            yield clip


def _frame_to_tensor(frame: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [h, w, 3] -> float32 [3, height, width], with the official arithmetic (``/ 255 * 2 - 1``
    before the resize)."""
    pixels = torch.from_numpy(frame).permute(2, 0, 1)[None] / 255.0 * 2 - 1.0
    return resize_frames_short_side_and_crop(pixels, height, width)[0]
