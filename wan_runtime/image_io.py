"""Reading the input image of a run, shared by the CLI's up-front checks and the pipelines.

The official code takes ``Image.open(path).convert("RGB")``; so does the runtime, with three
exceptions where that gives a picture other than the one the file shows, each said: 16-bit
greyscale (which ``convert`` clips to white) is scaled to 8 bits, and so is 32-bit integer greyscale
whose values go past 8 bits but fit in 16, a floating-point image or a 32-bit one past 16 bits
(whose values have no agreed range) is refused, and an EXIF rotation or a transparent area, which
``convert`` ignores as the official code does, is warned of.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wan_runtime.errors import InputError
from wan_runtime.input_files import require_file

# Phone cameras make photos of up to 200 million pixels; Pillow's guard against decompression
# bombs warns from 89 million and refuses from 179 million. 805 MB decoded at this limit.
MAX_PIXELS = 2**28
_PIXEL_GUARD = threading.Lock()
_EXIF_ORIENTATION = 0x0112
_TURNS = {2: "mirrored", 3: "upside down", 4: "flipped upside down", 5: "mirrored and on its side",
          6: "on its side", 7: "mirrored and on its side", 8: "on its side"}


@dataclass(frozen=True)
class CheckedImage:
    """An image file that decoded whole (``load_image``, its warnings told), ``width`` x ``height``
    pixels as it reads, decoded again when a video is made from it: the command line's checks
    hold no pixels, so a batch of many photos keeps none of them while it makes the others."""

    path: Path
    label: str
    width: int
    height: int

    @classmethod
    def check(cls, path: str | Path, label: str) -> CheckedImage:
        """The file ``path`` (``label`` names it in messages) decoded once; ``InputError`` as
        ``load_image`` raises it."""
        rgb = load_image(path, label)
        return cls(Path(path), label, rgb.width, rgb.height)

    def load(self) -> Image.Image:
        """The image, RGB; ``InputError`` for a file that no longer reads as it did."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # told when it was checked
            rgb = load_image(self.path, self.label)
        if rgb.size != (self.width, self.height):
            raise InputError(f"{self.label} {self.path} changed since it was checked ({self.width}x"
                             f"{self.height} pixels then, {rgb.width}x{rgb.height} now); run again")
        return rgb


def load_image(image: object, label: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image, a path or a ``CheckedImage`` (the official CLI converts
    to RGB too).

    The whole file is decoded, not only its header, so a truncated file is refused here rather
    than minutes later. ``label`` names the argument in error messages (e.g. ``"--image"``).
    """
    if isinstance(image, CheckedImage):
        return image.load()
    if isinstance(image, Image.Image):
        # An image opened but not loaded yet decodes its file in convert; the caller's stays open.
        source, fix = f"the {label} (a PIL image)", "load it from a whole file"
        opened = contextlib.nullcontext(image)
    elif isinstance(image, (str, Path)):
        path = require_file(image, label, "the path of a PNG, JPEG or WebP file")
        source, fix, opened = f"{label} {path}", "pass a PNG, JPEG or WebP file", None
    else:
        raise InputError(f"{label} must be a PIL image or a file path, got {type(image).__name__}")
    try:
        with _open(path, source) if opened is None else opened as picture:
            rgb = _rgb(picture, source)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        if opened is None and (kind := _signature(path)):  # a common format, which Pillow reads when whole
            fix = f"this {kind} file is likely damaged or cut short: copy or save it again whole"
        raise InputError(f"{source} cannot be read as an image ({err}); {fix}") from err
    if rgb.width < 1 or rgb.height < 1:
        raise InputError(f"the {label} is empty ({rgb.width}x{rgb.height} pixels)")
    return rgb


# The first bytes of the formats users give, for a file cut short before Pillow knows its format.
_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF"}


def _signature(path: Path) -> str | None:
    """The image format ``path``'s first bytes announce, if one of ``_SIGNATURES`` or WebP."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return None
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def _open(path: Path, source: str) -> Image.Image:
    """``path`` opened (its header read), with the runtime's own pixel limit for Pillow's."""
    with _PIXEL_GUARD:  # Pillow's limit is global: lifted for this open alone
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            picture = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    width, height = picture.size
    if width * height > MAX_PIXELS:
        picture.close()
        raise InputError(f"{source} is {width}x{height}, {width * height:,} pixels, more than the "
                         f"{MAX_PIXELS:,} the runtime decodes; scale it down (a video's frame has about a "
                         "million)")
    return picture


def _rgb(picture: Image.Image, source: str) -> Image.Image:
    if picture.mode == "F":
        raise InputError(f"{source} is a floating-point image, whose values have no agreed range; save it as "
                         "an 8-bit PNG or JPEG")
    orientation = picture.getexif().get(_EXIF_ORIENTATION)
    if orientation in _TURNS:
        warnings.warn(f"{source} is shown {_TURNS[orientation]} by its EXIF orientation ({orientation}), "
                      "which the official code ignores, and so does the runtime: the video starts from the "
                      "pixels as stored; save the image turned as it is shown to start from that",
                      stacklevel=3)
    if picture.mode.startswith("I;16") or picture.mode == "I":
        # 0..65535: convert would clip every value above 255 to white. A 32-bit image (a scientific
        # TIFF) holds the 8 or 16 bits it was made from, or a range nothing says how to show.
        values = np.asarray(picture)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise InputError(f"{source} is a 32-bit integer image with values from {low} to {high}, which "
                             "have no agreed range; save it as an 8- or 16-bit PNG")
        if picture.mode.startswith("I;16") or high > 255:
            # round(v / 257) in whole numbers (v / 257 is never halfway): 4 bytes a pixel, not 16.
            grey = (values.astype(np.uint32) + 128) // 257
            return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    # A palette or greyscale image may mark a colour transparent instead of holding an alpha band.
    alpha = (picture.getchannel("A") if picture.mode in ("RGBA", "LA", "PA") else
             picture.convert("RGBA").getchannel("A") if "transparency" in picture.info else None)
    if alpha is not None and alpha.getextrema()[0] < 255:
        warnings.warn(f"{source} has transparent pixels; as in the official code, their stored colour is "
                      "used (often black): flatten the image onto the background you want", stacklevel=3)
    return picture.convert("RGB")
