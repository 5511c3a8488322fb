"""The official ``WanS2V`` on the CPU, built on a tiny s2v-14B folder without its constructor.

``wan.speech2video`` imports torchvision (``transforms.Resize``, ``CenterCrop`` and ``ToTensor``,
on the reference image and on pose frames) and decord (``VideoReader``, for pose videos), which
the test environment lacks. While it imports, stand-ins are registered: the three transforms
written from torchvision's documented behaviour for PIL images and float tensors, and a
``VideoReader`` that decodes every frame with imageio-ffmpeg. They are removed again afterwards.
librosa is stubbed by ``tests.models.s2v_helpers`` to read ``.npy`` waveforms.
"""

from __future__ import annotations

import types
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from tests.models.s2v_helpers import official_s2v
from tests.models.vae_helpers import official_wrapper
from tests.official import import_with_stand_ins, official_module
from tests.pipelines.official_pipelines import official_text_encoder, to_tensor
from wan_runtime.models.audio_encoder import WAV2VEC2_DIR
from wan_runtime.tasks import TASKS

_SHIMMED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "decord")


def _height_width(image: Image.Image | torch.Tensor) -> tuple[int, int]:
    return tuple(image.shape[-2:]) if isinstance(image, torch.Tensor) else (image.height, image.width)


class Resize:
    """``torchvision.transforms.Resize(size: int)`` on a PIL image or a float tensor [..., H, W]: the
    shorter side becomes ``size``, the longer one ``int(size * long / short)``; bilinear (for tensors
    with antialiasing, torchvision's default since 0.17); an image already at that size is returned
    as is."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        h, w = _height_width(image)
        if w <= h:
            new = (self.size, int(self.size * h / w))
        else:
            new = (int(self.size * w / h), self.size)
        if new == (w, h):
            return image
        if isinstance(image, torch.Tensor):
            return F.interpolate(image, size=new[::-1], mode="bilinear", align_corners=False, antialias=True)
        return image.resize(new, Image.BILINEAR)


class CenterCrop:
    """``torchvision.transforms.CenterCrop((h, w))`` on a PIL image or a tensor [..., H, W]: zero
    padding (left/top ``diff // 2``, right/bottom the rest) where the image is smaller, then the
    crop at ``round((size - crop) / 2)``."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.height, self.width = size

    def __call__(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        h, w = _height_width(image)
        dw, dh = max(self.width - w, 0), max(self.height - h, 0)
        border = (dw // 2, dh // 2, dw - dw // 2, dh - dh // 2)
        if (dw or dh) and isinstance(image, torch.Tensor):
            image = F.pad(image, (border[0], border[2], border[1], border[3]), value=0.0)
        elif dw or dh:
            image = ImageOps.expand(image, border=border, fill=0)
        h, w = _height_width(image)
        top = int(round((h - self.height) / 2.0))
        left = int(round((w - self.width) / 2.0))
        if isinstance(image, torch.Tensor):
            return image[..., top:top + self.height, left:left + self.width]
        return image.crop((left, top, left + self.width, top + self.height))


class VideoReader:
    """``decord.VideoReader`` as ``WanS2V.read_last_n_frames`` uses it: every frame of the file,
    decoded by imageio-ffmpeg's ffmpeg to RGB, its average frame rate, its length and
    ``get_batch(indices).asnumpy()`` ([N, H, W, 3] uint8)."""

    def __init__(self, path: str) -> None:
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        width, height = meta["size"]
        self.fps = meta["fps"]
        self.frames = np.stack([np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader])

    def get_avg_fps(self) -> float:
        return self.fps

    def __len__(self) -> int:
        return len(self.frames)

    def get_batch(self, indices: list[int]) -> types.SimpleNamespace:
        return types.SimpleNamespace(asnumpy=lambda: self.frames[indices])


def _stand_ins() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in _SHIMMED}
    transforms = modules["torchvision.transforms"]
    transforms.Resize, transforms.CenterCrop = Resize, CenterCrop
    transforms.ToTensor = lambda: to_tensor
    transforms.functional = modules["torchvision.transforms.functional"]
    modules["torchvision"].transforms = transforms
    modules["decord"].VideoReader = VideoReader
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


def official_pose_frames(path: Path, clips: int, infer_frames: int,
                         size: tuple[int, int]) -> list[torch.Tensor]:
    """The frames [1, 3, infer_frames, H, W] of each clip that the official ``load_pose_cond``
    hands its VAE for pose video ``path`` at output ``size`` (H, W): its VAE is replaced by the
    identity, so the slice that drops the first latent drops the repeated first frame instead."""
    pipe = object.__new__(speech2video().WanS2V)
    pipe.vae = types.SimpleNamespace(encode=list)
    pipe.param_dtype, pipe.device, pipe.fps = torch.float32, torch.device("cpu"), TASKS["s2v-14B"].fps
    return pipe.load_pose_cond(str(path), clips, infer_frames, size)
