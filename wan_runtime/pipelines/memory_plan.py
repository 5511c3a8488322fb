"""How much device memory a pipeline's weights take, worked out before anything loads.

Each model is built on the meta device from its checkpoint's headers, in the dtypes and layout
``load_pipeline`` would give it (float32 islands, ``convert_model_dtype``, float8 DiT weights,
streamed blocks, FSDP shards), and its bytes counted. Where the models sit follows the pipeline's
residency: the VAE always on the device; the text encoder there unless ``t5_cpu``; with
``offload_model`` the big models (text encoder, DiTs, speech encoder) one at a time, else all at
once. The activations come on top and are not estimated: they depend on the video's size and on
the attention kernels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from wan_runtime.errors import InputError
from wan_runtime.models import WanModel
from wan_runtime.models.audio_encoder import Wav2Vec2Features
from wan_runtime.models.t5_checkpoint import read_checkpoint
from wan_runtime.models.umt5 import meta_encoder
from wan_runtime.models.vae_loading import meta_vae
from wan_runtime.tasks import TaskSpec

TEXT_ENCODER, VAE, AUDIO_ENCODER = "text encoder", "VAE", "speech encoder"
_GB = 1e9


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """The bytes of ``tensors``, each counted once."""
    unique = {id(t): t for t in tensors}
    return sum(t.numel() * t.element_size() for t in unique.values())


def module_bytes(module: nn.Module) -> int:
    """The bytes of ``module``'s parameters and buffers."""
    return tensor_bytes([*module.parameters(), *module.buffers()])


@dataclass(frozen=True)
class WeightPlan:
    """Each model's bytes on the device while it is there (``sizes``; a DiT with streamed
    blocks: its resident part and one block), the models always there (``fixed``), those taking
    turns (``turns``, under ``offload_model``) or all there together, and the most bytes of
    weights the device holds at once (``peak``, with the models then there, ``peak_models``)."""

    device: torch.device
    sizes: dict[str, int]
    fixed: tuple[str, ...]
    turns: bool
    moving: tuple[str, ...]

    @property
    def peak_models(self) -> tuple[str, ...]:
        if not self.turns or not self.moving:
            return self.fixed + self.moving
        return (*self.fixed, max(self.moving, key=self.sizes.__getitem__))

    @property
    def peak(self) -> int:
        return sum(self.sizes[name] for name in self.peak_models)

    def describe(self) -> str:
        """One line: the peak and what makes it."""
        parts = ", ".join(f"{name} {self.sizes[name] / _GB:.2f} GB" for name in self.peak_models)
        return (f"the weights take at most {self.peak / _GB:.2f} GB of {self.device} memory at once "
                f"({parts}); the activations come on top")

    def check_fits(self, capacity: int) -> None:
        """Raise ``InputError`` if the weights alone exceed ``capacity`` bytes of device memory."""
        if self.peak > capacity:
            raise InputError(
                f"{self.describe().replace('the weights take', 'the weights alone would take')}, more than "
                f"the {capacity / _GB:.2f} GB {self.device} has: keep fewer models there (offload_model, "
                "t5_cpu, stream_blocks) or store the DiTs in float8 (dit_fp8)"
            )


def dit_bytes(
    model: WanModel, dtype: torch.dtype, keep_float32: bool, fp8: bool, stream_blocks: int, shards: int
) -> int:
    """The device bytes of a meta-device DiT as it would load and run: its weights in ``dtype``
    (``float32_parameters`` kept when ``keep_float32``), float8 with ``fp8``; with
    ``stream_blocks`` its resident part and one streamed block; over ``shards`` FSDP processes
    its share and one gathered block."""
    model.set_compute_dtype(dtype, keep_float32=keep_float32)
    if fp8:
        model.store_weights_in_fp8()
    blocks = [module_bytes(block) for block in model.blocks]
    total = module_bytes(model)
    if shards > 1:
        return total // shards + max(blocks)
    streamed = blocks[len(blocks) - min(stream_blocks, len(blocks) - 1):] if stream_blocks else []
    return total - sum(streamed) + max(streamed, default=0)


def plan_weights(
    spec: TaskSpec,
    root: Path,
    device: torch.device,
    dit_class: type[WanModel],
    dtype: torch.dtype,
    offload_model: bool,
    t5_cpu: bool,
    convert_model_dtype: bool,
    dit_fsdp: bool,
    t5_fsdp: bool,
    stream_blocks: int,
    dit_fp8: bool,
    world: int,
) -> WeightPlan:
    """The plan of ``load_pipeline``'s checked arguments (``world``: the processes FSDP shards
    over). Reads headers and archive indexes alone. On the CPU every model is in its memory,
    whatever ``offload_model``, ``t5_cpu`` and ``stream_blocks`` say."""
    if device.type == "cpu":
        offload_model, t5_cpu, stream_blocks = False, False, 0
    sizes = {VAE: module_bytes(meta_vae(root / spec.vae_file))}
    moving = []
    if not t5_cpu:
        text_dtype = torch.float32 if dtype == torch.float32 else torch.bfloat16
        encoder = meta_encoder(read_checkpoint(root / spec.t5_file)[1]).to(text_dtype)
        blocks = [module_bytes(block) for block in encoder.encoder.block]
        total = module_bytes(encoder)
        sizes[TEXT_ENCODER] = total // world + max(blocks) if t5_fsdp else total
        if not t5_fsdp:
            moving.append(TEXT_ENCODER)
    for name, folder in zip(spec.dit_names, spec.dit_folders, strict=True):
        label = f"DiT {name}" if len(spec.dit_names) > 1 else "DiT"
        model = dit_class._meta_model(root / folder)[0]
        sizes[label] = dit_bytes(model, dtype, not (convert_model_dtype or dit_fsdp), dit_fp8, stream_blocks,
                                 world if dit_fsdp else 1)
        moving.append(label)
    if spec.audio_dir is not None:
        sizes[AUDIO_ENCODER] = module_bytes(Wav2Vec2Features.meta_model(root / spec.audio_dir))
        moving.append(AUDIO_ENCODER)
    fixed = tuple(name for name in sizes if name not in moving)
    return WeightPlan(device, sizes, fixed, offload_model, tuple(moving))
