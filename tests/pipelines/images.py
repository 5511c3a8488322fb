"""Input images for the pipeline tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB colour gradient with noise: structure for the VAE to encode, not a constant."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    channels = [x / width, y / height, (x + y) / (width + height)]
    pixels = np.stack(channels, axis=-1) * 200 + rng.integers(0, 55, (height, width, 3))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")
