"""Output resolutions chosen from an image and a target area, as the official pipelines choose
them, and the image preprocessing that goes with each.

The float arithmetic is the official one operation for operation, so a borderline size rounds
the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from wan_runtime.errors import InputError

if TYPE_CHECKING:
    from PIL import Image


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as float32 [3, H, W] in [-1, 1]: bytes / 255, then ``(v - 0.5) / 0.5``."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    return pixels.float().div(255).sub_(0.5).div_(0.5)


def area_latent_size(area: int, height: int, width: int, stride: int, patch: int) -> tuple[int, int]:
    """i2v-A14B: latent ``(h, w)`` of about ``area`` pixels at the image's aspect ratio, each a
    multiple of ``patch`` (sizes rounded down)."""
    ratio = height / width
    lat_h = round(float(np.sqrt(area * ratio)) // stride // patch * patch)
    lat_w = round(float(np.sqrt(area / ratio)) // stride // patch * patch)
    if lat_h < patch or lat_w < patch:
        raise InputError(
            f"an image of {width}x{height} pixels at a target area of {area} pixels gives a "
            f"{lat_w * stride}x{lat_h * stride} video: its aspect ratio is too extreme for that area; "
            "crop the image or pass a larger size"
        )
    return lat_h, lat_w


def resize_for_area(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """i2v-A14B: [3, H, W] -> [3, 1, height, width], bicubic on the CPU in float32 as the official
    pipeline resizes (no antialiasing; values may overshoot [-1, 1] a little, as there)."""
    resized = F.interpolate(image[None].cpu(), size=(height, width), mode="bicubic")
    return resized.transpose(0, 1)


def _round_down(value: float, step: int) -> int:
    return int(value // step * step)


def _distortion(ratio: float, candidate: float) -> float:
    return max(ratio / candidate, candidate / ratio)


def best_output_size(width: int, height: int, step_w: int, step_h: int, area: int) -> tuple[int, int]:
    """ti2v-5B with an image: ``(W, H)``, multiples of the steps with ``W * H <= area``, whose
    aspect ratio is closest to the image's; fitting the width first, then the height first, and
    keeping the better (the width-first one only when strictly better)."""
    ratio = width / height
    exact_w = (area * ratio) ** 0.5
    exact_h = area / exact_w
    width_first = _round_down(exact_w, step_w)
    height_first = _round_down(exact_h, step_h)
    if width_first == 0 or height_first == 0:
        raise InputError(
            f"an image of {width}x{height} pixels does not fit a target area of {area} pixels in steps of "
            f"{step_w}x{step_h}; crop the image or pass a larger size"
        )
    candidates = (
        (width_first, _round_down(area / width_first, step_h)),
        (_round_down(area / height_first, step_w), height_first),
    )
    if min(min(c) for c in candidates) == 0:
        raise InputError(
            f"an image of {width}x{height} pixels has an aspect ratio too extreme for a target area of "
            f"{area} pixels; crop the image or pass a larger size"
        )
    (w1, h1), (w2, h2) = candidates
    if _distortion(ratio, w1 / h1) < _distortion(ratio, w2 / h2):
        return w1, h1
    return w2, h2


def resize_and_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """ti2v-5B: scale ``image`` (Lanczos) until it covers ``width`` x ``height``, then crop the centre."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    scaled = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    return scaled.crop((left, top, left + width, top + height))
