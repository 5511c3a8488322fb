"""Input images and pose videos for the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB colour gradient with noise: structure for the VAE to encode, not a constant."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    channels = [x / width, y / height, (x + y) / (width + height)]
    pixels = np.stack(channels, axis=-1) * 200 + rng.integers(0, 55, (height, width, 3))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def write_pose_video(path: Path, width: int, height: int, frames: int, fps: float, seed: int = 0) -> Path:
    """An H.264 video of ``frames`` noisy gradients (a different noise per frame) at ``fps``, in
    4:4:4 chroma so that any size, odd ones too, is kept as it is."""
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv444p", macro_block_size=1)
    writer.send(None)
    for i in range(frames):
        writer.send(np.asarray(gradient_image(width, height, seed + i)).tobytes())
    writer.close()
    return path
