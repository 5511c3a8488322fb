"""The input image as the official code reads it (``Image.open(path).convert("RGB")``), but where
that is not the picture the file shows: 16-bit greyscale scaled, floating point refused, EXIF
rotations and transparency warned of, photos above Pillow's decompression-bomb guard read."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from tests.pipelines.images import gradient_image
from wan_runtime import image_io
from wan_runtime.errors import InputError
from wan_runtime.image_io import load_image


def official(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def quietly(path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return np.asarray(load_image(path))


@pytest.mark.parametrize(("mode", "suffix"), [("RGB", ".png"), ("L", ".png"), ("P", ".png"), ("RGBA", ".png"),
                                              ("LA", ".png"), ("CMYK", ".jpg"), ("RGB", ".webp")])
def test_an_image_is_what_the_official_code_reads(tmp_path, mode, suffix):
    path = tmp_path / f"image{suffix}"
    gradient_image(40, 24).convert(mode).save(path)
    np.testing.assert_array_equal(quietly(path), official(path))
    np.testing.assert_array_equal(quietly(Image.open(path)), official(path))


def test_16_bit_greyscale_is_scaled_to_8_bits(tmp_path):
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # every value
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    assert (official(path) == 255).mean() > 0.99  # what convert makes of it: white
    got = quietly(path)
    np.testing.assert_array_equal(got[..., 0], np.round(ramp / 257).astype(np.uint8))
    assert (got == got[..., :1]).all()


@pytest.mark.parametrize(("top", "bits"), [(65535, 16), (255, 8)])
def test_32_bit_greyscale_within_16_bits_is_read_as_what_it_holds(tmp_path, top, bits):
    """A 32-bit TIFF (mode I) whose values go past 255 holds 16 bits, which convert would clip to
    white; one within 255 is read as convert reads it, the official way."""
    ramp = np.linspace(0, top, 64 * 8).round().astype(np.int32).reshape(8, 64)
    path = tmp_path / "grey32.tiff"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I"
    want = np.round(ramp / 257) if bits == 16 else ramp
    np.testing.assert_array_equal(quietly(path)[..., 0], want.astype(np.uint8))
    if bits == 8:
        np.testing.assert_array_equal(quietly(path), official(path))


@pytest.mark.parametrize("values", [(-1, 10), (0, 70000)])
def test_32_bit_greyscale_past_16_bits_is_refused(tmp_path, values):
    path = tmp_path / "grey32.tiff"
    Image.fromarray(np.array([values], np.int32)).save(path)
    low, high = values
    message = f"grey32.tiff is a 32-bit integer image with values from {low} to {high}, which have no agreed"
    with pytest.raises(InputError, match=message):
        load_image(path)


def test_a_floating_point_image_is_refused(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    with pytest.raises(InputError, match="float.tiff is a floating-point image, whose values have no agreed "
                                         "range; save it as an 8-bit PNG or JPEG"):
        load_image(path)


def test_an_exif_rotation_is_warned_of_and_left_as_the_official_code_leaves_it(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    gradient_image(40, 24).save(path, exif=exif)
    with pytest.warns(UserWarning, match=r"phone.jpg is shown on its side by its EXIF orientation \(6\), "
                                         "which the official code ignores"):
        got = np.asarray(load_image(path, "--image"))
    np.testing.assert_array_equal(got, official(path))
    assert got.shape == (24, 40, 3)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L"])
def test_transparency_is_warned_of(tmp_path, mode):
    """An alpha band, or (palette, greyscale) a colour marked transparent; none when all is opaque."""
    picture = gradient_image(40, 24).convert(mode)
    path = tmp_path / "cutout.png"
    if mode in ("RGBA", "LA"):
        picture.putpixel((0, 0), (0,) * (len(mode) - 1) + (0,))
        picture.save(path)
    else:
        picture.save(path, transparency=picture.getpixel((0, 0)))
    with pytest.warns(UserWarning, match="cutout.png has transparent pixels; as in the official code"):
        np.testing.assert_array_equal(np.asarray(load_image(path)), official(path))
    gradient_image(40, 24).convert(mode).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(path)


def test_a_large_photo_is_read_and_a_larger_one_refused(tmp_path, monkeypatch):
    """Past Pillow's decompression-bomb guard (here set to 100 pixels: it refuses from twice that)
    up to the runtime's own limit, Pillow's guard left as it was."""
    path = tmp_path / "photo.jpg"
    gradient_image(64, 48).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert quietly(path).shape == (48, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == 100
    monkeypatch.setattr(image_io, "MAX_PIXELS", 64 * 48 - 1)
    with pytest.raises(InputError, match="photo.jpg is 64x48, 3,072 pixels, more than the 3,071 the runtime "
                                         "decodes; scale it down"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".gif"])
@pytest.mark.parametrize("kept", [0.5, 0.02], ids=["pixels cut", "header cut"])
def test_a_file_cut_short_is_told_damaged_and_another_file_not_an_image(tmp_path, suffix, kept):
    path = tmp_path / f"photo{suffix}"
    gradient_image(64, 48).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(12, int(len(data) * kept))])
    kind = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}[suffix]
    with pytest.raises(InputError, match=f"this {kind} file is likely damaged or cut short: copy or save it"):
        load_image(path)
    path.write_bytes(b"a text file, not an image")
    with pytest.raises(InputError, match="cannot be read as an image .*; pass a PNG, JPEG or WebP file$"):
        load_image(path)
