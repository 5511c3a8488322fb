"""Reading the input image of a run, shared by the CLI's up-front checks and the pipelines."""

from __future__ import annotations

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
        picture = image
    elif isinstance(image, (str, Path)):
        path = Path(image)
        require_file(path, label, "the path of a PNG, JPEG or WebP file")
        try:
            with Image.open(path) as opened:
                picture = opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise InputError(
                f"{label} {path} cannot be read as an image ({err}); pass a PNG, JPEG or WebP file"
            ) from err
    else:
        raise InputError(f"{label} must be a PIL image or a file path, got {type(image).__name__}")
    if picture.width < 1 or picture.height < 1:
        raise InputError(f"the {label} is empty ({picture.width}x{picture.height} pixels)")
    return picture.convert("RGB")
