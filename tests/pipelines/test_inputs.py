"""Every bad argument is an ``InputError`` raised before any model runs; bad folders fail at load."""

from __future__ import annotations

import pytest
import torch

from tests.pipelines.images import gradient_image
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.pipelines import load_pipeline

GOOD = {"size": "64*64", "frame_num": 5, "sampling_steps": 2, "seed": 0, "progress": False}


@pytest.fixture
def untouchable(monkeypatch):
    """Make any model work an error, to show that argument checks come first."""
    def refuse(pipeline):
        def fail(*args, **kwargs):
            raise AssertionError("a model ran before the arguments were checked")

        monkeypatch.setattr(pipeline.text_encoder, "encode", fail)
        monkeypatch.setattr(pipeline.vae, "encode", fail)
        return pipeline

    return refuse


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": "100*100"}, r"multiples of 16 .* nearest valid sizes: 96\*96, 96\*112, 112\*96, 112\*112"),
        ({"size": "8*64"}, r"nearest valid sizes: 16\*64"),
        ({"size": "64x64"}, "'W\\*H' string such as '1280\\*720'"),
        ({"size": "a*b"}, "'W\\*H' string"),
        ({"size": (64, 64)}, "'W\\*H' string"),
        ({"frame_num": 6}, r"1 \+ 4n .* nearest valid: 5 or 9"),
        ({"frame_num": 0}, r"1 \+ 4n"),
        ({"frame_num": 4}, r"1 \+ 4n"),
        ({"frame_num": 5.0}, r"1 \+ 4n"),
        ({"sampling_steps": -1}, "sampling_steps must be a positive integer"),
        ({"sampling_steps": 0}, "sampling_steps must be a positive integer"),
        ({"guide_scale": -1.0}, "guide_scale must be a finite number >= 0"),
        ({"guide_scale": (3.0, -2.0)}, "guide_scale must be a finite number >= 0"),
        ({"guide_scale": (1.0, 2.0, 3.0)}, r"\(low_noise, high_noise\) pair"),
        ({"guide_scale": float("nan")}, "guide_scale must be a finite number"),
        ({"shift": 0.0}, "shift must be a positive finite number"),
        ({"sample_solver": "euler"}, "unknown solver 'euler'"),
        ({"seed": "1"}, "seed must be an integer"),
        ({"seed": 2**64}, "seed must be an integer"),
        ({"n_prompt": None}, "n_prompt must be a string"),
        ({"image": None}, "i2v-A14B needs an input image"),
        ({"image": 3}, "image must be a PIL image or a file path"),
    ],
)
def test_i2v_bad_arguments(i2v_pipeline, untouchable, changes, message):
    arguments = {**GOOD, "image": gradient_image(32, 32), **changes}
    with pytest.raises(InputError, match=message):
        untouchable(i2v_pipeline).generate("a cat", **arguments)


def test_unreadable_images(i2v_pipeline, untouchable, tmp_path):
    pipeline = untouchable(i2v_pipeline)
    with pytest.raises(InputError, match="does not exist"):
        pipeline.generate("a cat", image=tmp_path / "missing.png", **GOOD)
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    with pytest.raises(InputError, match="cannot be read as an image"):
        pipeline.generate("a cat", image=str(text), **GOOD)


def test_image_too_extreme_for_the_area(i2v_pipeline, ti2v_pipeline, untouchable):
    strip = gradient_image(200, 4)
    with pytest.raises(InputError, match="aspect ratio is too extreme"):
        untouchable(i2v_pipeline).generate("a cat", image=strip, **{**GOOD, "size": "16*16"})
    with pytest.raises(InputError, match="does not fit a target area"):
        untouchable(ti2v_pipeline).generate("a cat", image=strip, **{**GOOD, "size": "32*32"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": "48*64"}, r"multiples of 32 .* nearest valid sizes: 32\*64, 64\*64"),
        ({"guide_scale": (1.0, 2.0)}, "guide_scale is one number"),
        ({"prompt": 3}, "prompt must be a string"),
        ({"progress": "yes"}, "progress must be True or False"),
    ],
)
def test_ti2v_bad_arguments(ti2v_pipeline, untouchable, changes, message):
    arguments = {"prompt": "a cat", **GOOD, **changes}
    with pytest.raises(InputError, match=message):
        untouchable(ti2v_pipeline).generate(**arguments)


def test_load_checks_the_folder_and_arguments_first(tmp_path, ti2v_root):
    with pytest.raises(InputError, match="unknown task 't2v-A14B'"):
        load_pipeline("t2v-A14B", ti2v_root)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline("ti2v-5B", tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="missing .*Wan2.2_VAE.pth"):
        load_pipeline("ti2v-5B", tmp_path)
    with pytest.raises(InputError, match="dtype must be"):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float16)
    with pytest.raises(InputError, match="not a torch device"):
        load_pipeline("ti2v-5B", ti2v_root, device="gpu")
