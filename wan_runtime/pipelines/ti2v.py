"""ti2v-5B: text-to-video, or text-and-image-to-video, as the official ``WanTI2V.generate``.

Without an image ``size`` is the output size. With one, ``size`` is the target area: the output
is the size of that area whose aspect ratio is closest to the image's, and the image is scaled to
cover it and cropped at the centre. Its latent then replaces the first latent frame before every
step, and those tokens are conditioned on timestep 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wan_runtime.pipelines.base import ImageCondition, Pipeline, Plan
from wan_runtime.pipelines.resolution import best_output_size, image_to_tensor, resize_and_crop

if TYPE_CHECKING:
    from PIL import Image

    from wan_runtime.image_io import CheckedImage
    from wan_runtime.tasks import TaskSpec


class TI2VPipeline(Pipeline):
    """The ti2v-5B task; ``dits`` holds its one DiT."""

    @staticmethod
    def output_size(spec: TaskSpec, image: Image.Image | CheckedImage | None, width: int,
                    height: int) -> tuple[int, int]:
        if image is None:
            return width, height
        _, stride_h, stride_w = spec.vae_stride
        _, patch_h, patch_w = spec.patch_size
        area = width * height
        return best_output_size(image.width, image.height, stride_w * patch_w, stride_h * patch_h, area)

    def _plan(self, image: Image.Image | None, width: int, height: int, frame_num: int) -> Plan:
        stride_t, stride_h, stride_w = self.spec.vae_stride
        width, height = self.output_size(self.spec, image, width, height)
        shape = (self.vae.z_dim, (frame_num - 1) // stride_t + 1, height // stride_h, width // stride_w)
        return Plan(width, height, frame_num, shape, image)

    def _encode_image(self, plan: Plan) -> ImageCondition:
        picture = image_to_tensor(resize_and_crop(plan.image, plan.width, plan.height))
        return ImageCondition(first_frame=self.vae.encode([picture[:, None].to(self.device)])[0])
