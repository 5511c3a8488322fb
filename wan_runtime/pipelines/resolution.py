"""Output resolutions chosen from an image and a target area, as the official pipelines choose
them, and the image preprocessing that goes with each.

The float arithmetic is the official one operation for operation, so a borderline size rounds
the same way.
"""

from __future__ import annotations

import math
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


# s2v-14B pads its output to multiples of 64 pixels and tries 100 scales between the largest that
# fits the area unpadded and the smallest that fits it with the most padding.
S2V_PAD = 64
_S2V_SCALE_TRIES = 100


def s2v_output_size(height: int, width: int, area: int) -> tuple[int, int]:
    """s2v-14B: ``(H, W)``, multiples of 64, of at most ``area`` pixels for an image of
    ``height`` x ``width``: the image at the largest tried scale, each side padded up to a multiple
    of 64 (scales up to 1 only, for an image smaller than the area)."""
    if height * width <= area:
        low, high = 0.1, 1.0
    else:
        # The scale at which the image plus the worst padding (63 per side) has the area.
        pad = S2V_PAD - 1
        linear, quadratic = pad * (height + width), height * width
        constant = pad**2 - area
        low = (-linear + math.sqrt(linear**2 - 2 * quadratic * constant)) / (2 * quadratic)
        high = math.sqrt(area / (height * width))
    for i in range(_S2V_SCALE_TRIES):
        scale = high - (high - low) * i / _S2V_SCALE_TRIES
        padded_h = _pad_up(int(height * scale), S2V_PAD)
        padded_w = _pad_up(int(width * scale), S2V_PAD)
        if padded_h * padded_w <= area:
            return padded_h, padded_w
    # No tried scale fits: the area's own shape at the image's aspect ratio, rounded down.
    ratio = width / height
    fit_w = int((area * ratio) ** 0.5 // S2V_PAD * S2V_PAD)
    fit_h = int((area / ratio) ** 0.5 // S2V_PAD * S2V_PAD)
    if fit_w >= width or fit_h >= height:
        fit_w, fit_h = int(width // S2V_PAD * S2V_PAD), int(height // S2V_PAD * S2V_PAD)
    if fit_w == 0 or fit_h == 0:
        raise InputError(
            f"an image of {width}x{height} pixels does not fit a target area of {area} pixels in steps of "
            f"{S2V_PAD}; crop the image or pass a larger size"
        )
    return fit_h, fit_w


def _pad_up(value: int, step: int) -> int:
    return value + (step - value % step) % step


def resize_short_side_and_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """s2v-14B: scale ``image`` (bilinear) so its short side is ``min(height, width)``, then take the
    centre ``height`` x ``width``, padding with black where the image is smaller, as torchvision's
    ``Resize(int)`` and ``CenterCrop`` do for a PIL image."""
    from PIL import Image, ImageOps

    new_h, new_w = _short_side_size(image.height, image.width, min(height, width))
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.BILINEAR)
    (left, right), (top, bottom) = _centre_padding(image.width, width), _centre_padding(image.height, height)
    if left or right or top or bottom:
        image = ImageOps.expand(image, (left, top, right, bottom), fill=0)
    top, left = _crop_offset(image.height, height), _crop_offset(image.width, width)
    return image.crop((left, top, left + width, top + height))


def resize_frames_short_side_and_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """s2v-14B pose frames: float [N, 3, h, w] -> [N, 3, height, width], as torchvision's
    ``Resize(min(height, width))`` and ``CenterCrop((height, width))`` do to a tensor: the short side
    scaled bilinearly with antialiasing (frames already at that size untouched), then zero padding
    where smaller (0, mid-grey in [-1, 1], as there) and the centre crop."""
    h, w = frames.shape[-2:]
    new_h, new_w = _short_side_size(h, w, min(height, width))
    if (new_h, new_w) != (h, w):
        frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False,
                               antialias=True)
    padding = (*_centre_padding(new_w, width), *_centre_padding(new_h, height))
    if any(padding):
        frames = F.pad(frames, padding)
    top, left = _crop_offset(frames.shape[-2], height), _crop_offset(frames.shape[-1], width)
    return frames[..., top:top + height, left:left + width]


def _short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's ``Resize(short)`` size ``(h, w)``: the short side ``short``, the long side
    truncated at the same ratio."""
    scaled = (short, int(short * max(height, width) / min(height, width)))
    return scaled[::-1] if width <= height else scaled


def _centre_padding(size: int, crop: int) -> tuple[int, int]:
    """torchvision's ``CenterCrop`` padding (before, after) of a side of ``size`` to ``crop``."""
    missing = max(crop - size, 0)
    return missing // 2, (missing + 1) // 2


def _crop_offset(size: int, crop: int) -> int:
    return int(round((size - crop) / 2.0))
