"""i2v-A14B: image-to-video with two experts, as the official ``WanI2V.generate`` (``lightning=False``).

The image sets the aspect ratio and ``size`` the pixel area. It is resized (bicubic), followed by
``frame_num - 1`` black frames and VAE-encoded; a 4-channel mask marking the first latent frame
as given is concatenated to that latent, forming the 20 conditioning channels ``y`` the DiT
takes beside the 16 noisy ones. The high-noise expert denoises while ``t >= boundary * 1000``,
the low-noise one after, each with its own guide scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from wan_runtime.errors import InputError
from wan_runtime.pipelines.base import ImageCondition, Pipeline, Plan
from wan_runtime.pipelines.inputs import expert_scale
from wan_runtime.pipelines.resolution import area_latent_size, image_to_tensor, resize_for_area
from wan_runtime.tasks import HIGH_NOISE, LOW_NOISE

if TYPE_CHECKING:
    from PIL import Image

    from wan_runtime.image_io import CheckedImage
    from wan_runtime.tasks import TaskSpec

# The VAE 2.1 latent channels (the noise the high- and low-noise experts denoise).
LATENT_CHANNELS = 16


class I2VPipeline(Pipeline):
    """The i2v-A14B task; ``dits`` holds the experts under ``"high_noise"`` and ``"low_noise"``."""

    @staticmethod
    def output_size(spec: TaskSpec, image: Image.Image | CheckedImage | None, width: int,
                    height: int) -> tuple[int, int]:
        if image is None:
            raise InputError("i2v-A14B needs an input image: pass image= a PIL image or a file path")
        stride = spec.vae_stride[1]
        lat_h, lat_w = area_latent_size(width * height, image.height, image.width, stride, spec.patch_size[1])
        return lat_w * stride, lat_h * stride

    def _plan(self, image: Image.Image | None, width: int, height: int, frame_num: int) -> Plan:
        width, height = self.output_size(self.spec, image, width, height)
        stride_t, stride_h, stride_w = self.spec.vae_stride
        frames = (frame_num - 1) // stride_t + 1
        shape = (LATENT_CHANNELS, frames, height // stride_h, width // stride_w)
        return Plan(width, height, frame_num, shape, image)

    def _encode_image(self, plan: Plan) -> ImageCondition:
        first = resize_for_area(image_to_tensor(plan.image), plan.height, plan.width)
        blank = torch.zeros(3, plan.frame_num - 1, plan.height, plan.width)
        latent = self.vae.encode([torch.cat([first, blank], dim=1).to(self.device)])[0]
        mask = torch.zeros(self.spec.vae_stride[0], *latent.shape[1:], device=latent.device)
        mask[:, 0] = 1
        return ImageCondition(y=torch.cat([mask, latent])[None])

    def _expert(self, t: float, guide_scale: tuple[float, float]) -> tuple[str, float]:
        name = HIGH_NOISE if t >= self.spec.boundary * self.spec.num_train_timesteps else LOW_NOISE
        return name, expert_scale(guide_scale, name)
