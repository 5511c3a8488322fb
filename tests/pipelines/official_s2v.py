"""The official ``WanS2V`` on the CPU, built on a tiny s2v-14B folder without its constructor.

``wan.speech2video`` imports torchvision (``transforms.Resize``, ``CenterCrop`` and ``ToTensor``
are what ``generate`` calls without a pose video) and decord (pose videos only), which the test
environment lacks. While it imports, stand-ins are registered: the three transforms written from
torchvision's documented behaviour for PIL images, and an empty decord. They are removed again
afterwards. librosa is stubbed by ``tests.models.s2v_helpers`` to read ``.npy`` waveforms.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch
from PIL import Image, ImageOps

from tests.models.s2v_helpers import official_s2v
from tests.models.vae_helpers import official_wrapper
from tests.official import import_with_stand_ins, official_module
from tests.pipelines.official_pipelines import official_text_encoder, to_tensor
from wan_runtime.models.audio_encoder import WAV2VEC2_DIR
from wan_runtime.tasks import TASKS

_SHIMMED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "decord")


class Resize:
    """``torchvision.transforms.Resize(size: int)`` on a PIL image: the shorter side becomes
    ``size``, the longer one ``int(size * long / short)``; bilinear; an image already at that size
    is returned as is."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if w <= h:
            new = (self.size, int(self.size * h / w))
        else:
            new = (int(self.size * w / h), self.size)
        return image if new == (w, h) else image.resize(new, Image.BILINEAR)


class CenterCrop:
    """``torchvision.transforms.CenterCrop((h, w))`` on a PIL image: zero padding (left/top
    ``diff // 2``, right/bottom the rest) where the image is smaller, then the crop at
    ``round((size - crop) / 2)``."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.height, self.width = size

    def __call__(self, image: Image.Image) -> Image.Image:
        dw, dh = max(self.width - image.width, 0), max(self.height - image.height, 0)
        if dw or dh:
            image = ImageOps.expand(image, border=(dw // 2, dh // 2, dw - dw // 2, dh - dh // 2), fill=0)
        top = int(round((image.height - self.height) / 2.0))
        left = int(round((image.width - self.width) / 2.0))
        return image.crop((left, top, left + self.width, top + self.height))


def _stand_ins() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in _SHIMMED}
    transforms = modules["torchvision.transforms"]
    transforms.Resize, transforms.CenterCrop = Resize, CenterCrop
    transforms.ToTensor = lambda: to_tensor
    transforms.functional = modules["torchvision.transforms.functional"]
    modules["torchvision"].transforms = transforms
    modules["decord"].VideoReader = None
    return modules


def speech2video() -> types.ModuleType:
    """``wan.speech2video`` with the stand-ins and the CPU shims."""
    official_s2v("model_s2v")
    official_s2v("audio_encoder")
    for module in ("modules.t5", "modules.vae2_1", "utils.fm_solvers", "utils.fm_solvers_unipc"):
        official_module(module)
    return import_with_stand_ins("speech2video", _stand_ins())


def official_s2v_pipeline(root: Path, motion_frames: int):
    """``WanS2V`` on the s2v-14B tiny folder ``root`` in float32 (``param_dtype`` is the dtype its
    noise, audio and motion context are cast to), with ``motion_frames`` pixel frames of context."""
    module = speech2video()
    spec = TASKS["s2v-14B"]
    pipe = object.__new__(module.WanS2V)
    pipe.device = torch.device("cpu")
    pipe.rank, pipe.sp_size = 0, 1
    pipe.t5_cpu, pipe.init_on_cpu = False, False
    pipe.num_train_timesteps = spec.num_train_timesteps
    pipe.param_dtype = torch.float32
    pipe.sample_neg_prompt = spec.negative_prompt
    pipe.text_encoder = official_text_encoder(root)
    pipe.vae = official_wrapper("2.1", root / spec.vae_file)
    dit = official_s2v("model_s2v").WanModel_S2V.from_pretrained(root)
    pipe.noise_model = dit.eval().requires_grad_(False)
    pipe.audio_encoder = official_s2v("audio_encoder").AudioEncoder(model_id=str(root / WAV2VEC2_DIR))
    pipe.motion_frames = motion_frames
    pipe.drop_first_motion = True
    pipe.fps = spec.fps
    pipe.audio_sample_m = 0
    return pipe
