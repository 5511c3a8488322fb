"""Reading the input image of a run, shared by the CLI's up-front checks and the pipelines."""

from __future__ import annotations

import contextlib
from pathlib import Path

from PIL import Image

from wan_runtime.errors import InputError
from wan_runtime.input_files import require_file


def load_image(image: object, label: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image or a path (the official CLI converts to RGB too).

    The whole file is decoded, not only its header, so a truncated file is refused here rather
    than minutes later. ``label`` names the argument in error messages (e.g. ``"--image"``).
    """
    if isinstance(image, Image.Image):
        # An image opened but not loaded yet decodes its file in convert; the caller's stays open.
        source, fix = f"the {label} (a PIL image)", "load it from a whole file"
        opened = contextlib.nullcontext(image)
    elif isinstance(image, (str, Path)):
        path = Path(image)
        require_file(path, label, "the path of a PNG, JPEG or WebP file")
        source, fix, opened = f"{label} {path}", "pass a PNG, JPEG or WebP file", None
    else:
        raise InputError(f"{label} must be a PIL image or a file path, got {type(image).__name__}")
    try:
        with Image.open(path) if opened is None else opened as picture:
            rgb = picture.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{source} cannot be read as an image ({err}); {fix}") from err
    if rgb.width < 1 or rgb.height < 1:
        raise InputError(f"the {label} is empty ({rgb.width}x{rgb.height} pixels)")
    return rgb
