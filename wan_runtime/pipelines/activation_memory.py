"""How much device memory one video takes at its peak, weights and activations, before it runs.

Each stage of the run does its work on meta-device tensors of the video's sizes, through the
models' own code, while ``live_bytes`` counts the tensors alive at once: the VAE encoding the
input image (i2v-A14B: and the black frames after it), each
DiT's forward for each guidance branch (the conditional prediction kept while the unconditional
one runs), and the VAE decode of the latent (in tiles with ``vae_tiling``). Added to the weights
on the device during that stage (``WeightPlan.weights_while``), the largest sum is the peak. The
text encoder's stage counts its weights alone: its activations at 512 tokens are a few tens of MB
beside 11 GB of weights (and the encoder's attention mask is built from the tokens' values, which
the meta device does not have).

It is a lower bound of ``torch.cuda.max_memory_allocated``: left out are the kernels' workspaces
(cuDNN's convolutions above all: on an H100 the VAE decode at 720p allocated 1.2-1.5x the
tensors counted here), the tensors one stage hands the next (the prompts' encodings, the
image's latent) and the solver's past predictions (latent-sized: tens of MB at 720p), and what
the allocator reserves beyond what it hands out. One process: under ``torchrun`` the sequence
and the weights are split, and this is not worked out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from wan_runtime.models import WanModel, WanVAE
from wan_runtime.models.vae_loading import codec
from wan_runtime.pipelines.base import decode
from wan_runtime.pipelines.live_bytes import peak_bytes
from wan_runtime.pipelines.memory_plan import _GIB, TEXT_ENCODER, VAE, WeightPlan, dit_label
from wan_runtime.tasks import HIGH_NOISE, TaskSpec

_META = torch.device("meta")


class StagePeak(NamedTuple):
    """A stage of the run (named as the run report's timings name it), the model working in it
    (the ``WeightPlan``'s name), the weights on the device meanwhile and the stage's activations
    at their most, in bytes."""

    stage: str
    model: str
    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


@dataclass(frozen=True)
class MemoryEstimate:
    """Each stage's ``StagePeak`` of one video on ``device``; ``remedy`` says what lowers the peak."""

    device: torch.device
    stages: tuple[StagePeak, ...]
    remedy: str

    @property
    def busiest(self) -> StagePeak:
        """The stage of the peak (the first of those that tie)."""
        return max(self.stages, key=lambda stage: stage.total)

    @property
    def peak(self) -> int:
        """The most bytes on the device at once, at least."""
        return self.busiest.total

    def describe(self) -> str:
        """The peak and what makes it, in words."""
        stage = self.busiest
        return (f"at least {stage.total / _GIB:.2f} GiB of {self.device} memory at the peak, in the "
                f"{stage.stage} ({stage.weights / _GIB:.2f} GiB of weights, {stage.activations / _GIB:.2f} "
                f"GiB of activations of the {stage.model})")


@dataclass(frozen=True)
class VideoShape:
    """What sizes a video's activations: its ``width`` x ``height`` in pixels (the output size,
    resolved), ``frame_num`` frames, whether an input ``image`` conditions it, the guide scale
    (one, or i2v-A14B's ``(low_noise, high_noise)``; at 1 a step runs one branch) and the decode's
    tiles (``vae_tiling`` pixels, 0: whole frames)."""

    width: int
    height: int
    frame_num: int
    image: bool
    guide: float | tuple[float, float]
    vae_tiling: int = 0


def estimate_memory(plan: WeightPlan, spec: TaskSpec, video: VideoShape) -> MemoryEstimate:
    """The peak of ``video``'s run with the models of ``plan`` (``load_pipeline``'s, one process),
    stage by stage, as the module's docstring says; a second or so for a release DiT, several
    for a tiled decode at 720p (the meta device runs each tile's ops)."""
    models = plan.meta_models
    vae = codec(models[VAE])
    names = list(spec.dit_names)
    dits: dict[str, WanModel] = {name: models[dit_label(name, names)] for name in names}
    first = next(iter(dits.values()))
    stride_t, stride_h, stride_w = spec.vae_stride
    latent_shape = (first.config.out_dim, (video.frame_num - 1) // stride_t + 1,
                    video.height // stride_h, video.width // stride_w)
    dtype = first.patch_embedding.weight.dtype
    text_dtype = torch.float32 if dtype == torch.float32 else torch.bfloat16

    stages = []

    def add(stage: str, model: str, activations: int) -> None:
        stages.append(StagePeak(stage, model, plan.weights_while(model), activations))

    if TEXT_ENCODER in plan.models:
        add("text_encode", TEXT_ENCODER, 0)
    if video.image:
        frames = video.frame_num if first.config.in_dim > first.config.out_dim else 1
        add("vae_encode", VAE, peak_bytes(encode_work, vae, frames, video.height, video.width))
    for name, dit in dits.items():
        branches = 1 if _scale(video.guide, name) == 1 else 2
        per_token = video.image and first.config.in_dim == first.config.out_dim
        add("denoise", dit_label(name, names),
            peak_bytes(step_work, dit, latent_shape, spec.text_len, text_dtype, branches, per_token))
    add("vae_decode", VAE, peak_bytes(decode_work, vae, latent_shape, video.vae_tiling))
    return MemoryEstimate(plan.device, tuple(stages), _remedy(stages, video.vae_tiling, plan.remedy))


def _scale(guide: float | tuple[float, float], name: str) -> float:
    """The guide scale the DiT ``name`` samples with."""
    if isinstance(guide, tuple):
        low, high = guide
        return high if name == HIGH_NOISE else low
    return guide


def encode_work(vae: WanVAE, frames: int, height: int, width: int, device: torch.device = _META) -> None:
    """The VAE encode of ``frames`` frames of ``height`` x ``width`` pixels, made on ``device``."""
    vae.encode([torch.zeros(3, frames, height, width, device=device)])


def step_work(
    dit: WanModel, latent_shape: tuple[int, ...], text_len: int, text_dtype: torch.dtype, branches: int,
    per_token: bool, device: torch.device = _META,
) -> None:
    """A sampling step's DiT forwards, one per guidance branch, on inputs made on ``device``: the
    i2v conditioning ``y`` beside the latent when the DiT takes more channels than it predicts,
    one timestep per token (ti2v-5B's fixed first frame at 0) with ``per_token``."""
    config = dit.config
    x = torch.zeros(1, *latent_shape, device=device)
    extra = config.in_dim - config.out_dim
    y = torch.zeros(1, extra, *latent_shape[1:], device=device) if extra else None
    patch_t, patch_h, patch_w = config.patch_size
    tokens = latent_shape[1] // patch_t * (latent_shape[2] // patch_h) * (latent_shape[3] // patch_w)
    t = torch.full((1, tokens) if per_token else (1,), 999.0, device=device)
    if per_token:
        t[:, : tokens // (latent_shape[1] // patch_t)] = 0
    contexts = [torch.zeros(1, text_len, config.text_dim, dtype=text_dtype, device=device)
                for _ in range(branches)]
    # The first step makes the rope tables the model then keeps: they count, as in a run.
    dit.forget_rope_tables()
    flows = [dit(x, t, context, y) for context in contexts]
    del flows


def decode_work(
    vae: WanVAE, latent_shape: tuple[int, ...], vae_tiling: int, device: torch.device = _META
) -> None:
    """The decode of a latent of ``latent_shape``, made on ``device``, as the pipeline decodes."""
    decode(vae, torch.zeros(*latent_shape, device=device), vae_tiling)


def _remedy(stages: list[StagePeak], vae_tiling: int, weights_remedy: str) -> str:
    """What lowers the peak: smaller tiles, or tiling, when the decode makes it; else a smaller
    video or fewer frames, and what lowers the weights."""
    busiest = max(stages, key=lambda stage: stage.total)
    if busiest.stage == "vae_decode":
        return ("decode in smaller tiles (--vae_tiling 256)" if vae_tiling else
                "decode in tiles (--vae_tiling, about half the decode's memory)")
    weights = weights_remedy.removeprefix("to fit, ")
    return f"make a smaller video or fewer frames (--size, --frame_num), or {weights}"
