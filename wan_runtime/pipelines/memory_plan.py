"""How much device memory a pipeline's weights take, worked out before anything loads.

Each model is built on the meta device from its checkpoint's headers, in the dtypes and layout
``load_pipeline`` would give it (float32 islands, ``convert_model_dtype``, float8 DiT weights,
streamed blocks, FSDP shards), and its bytes counted: what stays on the device (``Footprint.resident``)
and what comes only while the model works (``extra``: one streamed block, FSDP's gathered units;
``computing``: of those, what the activations' peak meets).
Where the models sit follows the pipeline's residency: the VAE always on the device; the text
encoder there unless ``t5_cpu``; with ``offload_model`` the big models (text encoder, DiTs, speech
encoder) one at a time, else all at once; one model works at a time. The activations come on top
and depend on the video: ``activation_memory`` adds them, stage by stage, on the plan's meta models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from wan_runtime.checks import PLACEMENT_FLAGS
from wan_runtime.errors import InputError
from wan_runtime.models import WanModel
from wan_runtime.models.audio_encoder import Wav2Vec2Features
from wan_runtime.models.device_copies import module_tensors
from wan_runtime.models.t5_checkpoint import read_checkpoint
from wan_runtime.models.umt5 import meta_encoder
from wan_runtime.models.vae_loading import meta_vae
from wan_runtime.pipelines.memory_advice import (
    AUDIO_ENCODER,
    TEXT_ENCODER,
    VAE,
    Step,
    dit_label,
    is_dit,
    say,
    weight_steps,
)
from wan_runtime.tasks import TaskSpec

# GiB, as torch reports a GPU's memory and as the cards are sold ("24 GB" is 24 GiB).
_GIB = 2**30


def _bytes(tensors: Iterable[torch.Tensor]) -> int:
    """The bytes of ``tensors``, each counted once."""
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def module_bytes(module: nn.Module) -> int:
    """The bytes of ``module``'s parameters and buffers, a tensor two layers share counted once."""
    return _bytes(module_tensors(module))


def parameter_bytes(module: nn.Module) -> int:
    """The bytes of ``module``'s parameters, one two layers share counted once."""
    return _bytes(module.parameters())


def shard_bytes(model: nn.Module, world: int) -> int:
    """The bytes of the first process's share of ``model``'s parameters under FSDP, which splits
    each along its first dimension in chunks of ``ceil(rows / world)`` (the largest share)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(-(-p.shape[0] // world) * (p.numel() // p.shape[0]) * p.element_size() for p in unique)


class Footprint(NamedTuple):
    """A model's bytes on the device: always while it is there (``resident``), on top at most while
    it works (``extra``) and, of those, what the activations' peak is counted beside
    (``computing``: for FSDP, the least it keeps gathered at any moment of the work; None: all of
    ``extra``, as a streamed block, there while each block it streams computes)."""

    resident: int
    extra: int = 0
    computing: int | None = None

    @property
    def working(self) -> int:
        return self.resident + self.extra

    @property
    def while_computing(self) -> int:
        """The bytes on the device counted beside the activations' peak."""
        return self.resident + (self.extra if self.computing is None else self.computing)


def sharded(model: nn.Module, blocks: list[nn.Module], world: int, root_buffer_kept: bool) -> Footprint:
    """``model`` sharded over ``world`` FSDP processes (``fully_shard``), one unit per block and one
    for the rest (the root): each process keeps a share of every weight and the buffers whole, and
    the root unit's weights are gathered only while the model works (the pipelines reshard it
    after, ``Pipeline._release_gathered``).

    A unit runs gathered: its shares all-gathered into one buffer of ``world`` shares, copied out
    into the whole weights (as large, padding included). In a forward, FSDP frees a unit's buffer
    only once the next unit's copy-out is done, so while block i+1 is copied out, block i's
    buffer, block i+1's buffer and its weights are alive; the root's weights throughout.
    ``root_buffer_kept``: the root's buffer too waits for the first block's copy-out (a forward
    called directly), and some buffer is alive at every moment; else (the DiT's, which runs
    through FSDP-registered stages whose first ends before a block gathers) it is freed first, and
    the last stage (the head) works beside the root's weights alone.
    """
    block = max(world * shard_bytes(b, world) for b in blocks)
    root = world * (shard_bytes(model, world) - sum(shard_bytes(b, world) for b in blocks))
    kept = shard_bytes(model, world) + module_bytes(model) - parameter_bytes(model)
    running = 2 * block  # a block's buffer and weights
    if root_buffer_kept:
        return Footprint(kept, root + running + max(root, block), root + min(root, block))
    return Footprint(kept, root + max(root, running + block), root)


def prepare_dit(model: WanModel, dtype: torch.dtype, keep_float32: bool, fp8: bool) -> WanModel:
    """A meta-device DiT as it would load: weights in ``dtype`` (``float32_parameters`` kept when
    ``keep_float32``), float8 with ``fp8``; changed in place and returned."""
    model.set_compute_dtype(dtype, keep_float32=keep_float32)
    if fp8:
        model.store_weights_in_fp8()
    return model


def streamed_blocks(model: WanModel, stream_blocks: int) -> list[nn.Module]:
    """The blocks ``stream_blocks`` keeps in CPU memory (``WanModel.streamed_indices``)."""
    return [model.blocks[i] for i in model.streamed_indices(stream_blocks)]


def dit_footprint(model: WanModel, stream_blocks: int, world: int) -> Footprint:
    """A loaded (or ``prepare_dit``'s) DiT as it runs: ``stream_blocks`` of its last blocks in CPU
    memory, one at a time on the device; sharded over ``world`` processes (FSDP) when above 1."""
    if world > 1:
        return sharded(model, list(model.blocks), world, root_buffer_kept=False)
    streamed = [module_bytes(block) for block in streamed_blocks(model, stream_blocks)]
    return Footprint(module_bytes(model) - sum(streamed), max(streamed, default=0))


class PlanOptions(NamedTuple):
    """``load_pipeline``'s arguments that shape its weights' plan or what lowers them, and
    ``world``: the processes FSDP shards over."""

    dtype: torch.dtype
    offload_model: bool
    t5_cpu: bool
    convert_model_dtype: bool
    dit_fsdp: bool
    t5_fsdp: bool
    stream_blocks: int
    dit_fp8: bool
    world: int = 1
    cuda_graphs: bool = False

    def shared(self, ulysses: int) -> bool:
        """Whether the processes share one generation, the tokens split over ``ulysses`` of them
        or the weights sharded; they then split the VAE's rows too (``WanVAE.row_split``)."""
        return self.world > 1 and (ulysses > 1 or self.dit_fsdp or self.t5_fsdp)


@dataclass(frozen=True)
class WeightPlan:
    """Each model's ``Footprint`` on the device (``models``; none for one kept on the CPU), those
    taking turns there (``moving``, under ``offload_model``; empty: every model stays), the
    ``options`` it was made for, and the meta-device models it was made of, by the same names, in
    the dtypes they would run in (``meta_models``: what ``activation_memory`` runs a video's stages
    on; the text encoder there also under ``t5_cpu`` when it was read)."""

    device: torch.device
    models: dict[str, Footprint]
    moving: tuple[str, ...]
    options: PlanOptions
    meta_models: dict[str, nn.Module] = field(default_factory=dict, compare=False, repr=False)

    def weights_while(self, name: str, computing: bool = False) -> int:
        """The most weights on the device while the model ``name`` works (``computing``: those
        counted beside its activations' peak, ``Footprint.computing``)."""
        others = sum(f.resident for n, f in self.models.items() if n not in self.moving and n != name)
        own = self.models[name]
        return others + (own.while_computing if computing else own.working)

    @property
    def busiest(self) -> str:
        """The model whose work holds the most weights on the device (the first loaded of those
        that tie, e.g. the VAE when every model stays and none brings more while it works)."""
        return max(self.models, key=self.weights_while)

    @property
    def peak(self) -> int:
        """The most bytes of weights on the device at once."""
        return self.weights_while(self.busiest)

    def on_device(self, name: str) -> list[str]:
        """The models on the device while the model ``name`` works."""
        return [n for n in self.models if n not in self.moving or n == name]

    @property
    def peak_models(self) -> list[str]:
        """The models on the device at the peak."""
        return self.on_device(self.busiest)

    def describe(self) -> str:
        """The peak and what makes it, in words."""
        busiest = self.busiest
        parts = ", ".join(f"{n} {self.models[n].resident / _GIB:.2f} GiB" for n in self.peak_models)
        extra = self.models[busiest].extra
        working = f"; {extra / _GIB:.2f} GiB more while the {busiest} works" if extra else ""
        return f"at most {self.peak / _GIB:.2f} GiB of {self.device} memory at once ({parts}{working})"

    def check_fits(self, capacity: int) -> None:
        """Raise ``InputError`` if the weights alone exceed ``capacity`` bytes of device memory."""
        if self.peak > capacity:
            raise InputError(f"the weights alone would take {self.describe()}: more than the "
                             f"{capacity / _GIB:.2f} GiB it has; {self.remedy}")

    @property
    def most_streamed(self) -> int:
        """The most blocks ``stream_blocks`` can stream: all of the smallest DiT's but its first."""
        return min(len(model.blocks) for name, model in self.meta_models.items() if is_dit(name)) - 1

    @property
    def remedy_steps(self) -> list[Step]:
        """What lowers the weights' peak, of what these options allow and have not done."""
        return self.steps_while(self.busiest)

    def steps_while(self, name: str) -> list[Step]:
        """What lowers the weights on the device while the model ``name`` works, of what these
        options allow and have not done; on the CPU, nothing that places a model in CPU memory,
        where every model already is."""
        steps = weight_steps(self.options, self.most_streamed, name, self.on_device(name))
        return steps if self.device.type != "cpu" else [s for s in steps if s.option not in PLACEMENT_FLAGS]

    @property
    def remedy(self) -> str:
        """``remedy_steps`` in words."""
        return say(self.remedy_steps, flags=False)

    def placed(self, offload_model: bool, t5_cpu: bool, stream_blocks: int) -> WeightPlan:
        """The plan of the same models placed under these options instead: what ``plan_models``
        would give for them. On a GPU the text encoder must have been read (a plan made under
        ``t5_cpu`` lacks it) to be placed there; FSDP's shards stay on the GPUs."""
        if (self.options.dit_fsdp and (offload_model or stream_blocks)) or (self.options.t5_fsdp and t5_cpu):
            raise ValueError("placed: FSDP's shards stay on the GPUs (no offload_model or stream_blocks with "
                             "dit_fsdp, no t5_cpu with t5_fsdp)")
        if self.device.type == "cuda" and not t5_cpu and TEXT_ENCODER not in self.meta_models:
            raise ValueError("placed: this plan was made without the text encoder (t5_cpu on a GPU); "
                             "make it with t5_cpu=False to place the text encoder on the device")
        options = self.options._replace(offload_model=offload_model, t5_cpu=t5_cpu,
                                        stream_blocks=stream_blocks)
        return _placed(self.device, self.meta_models, options)


def plan_weights(
    spec: TaskSpec,
    root: Path,
    device: torch.device,
    dit_class: type[WanModel],
    **options: Any,
) -> WeightPlan:
    """The plan of the release folder ``root`` of ``spec``'s task under ``load_pipeline``'s
    checked arguments ``options`` (``PlanOptions``'s fields); reads headers and archive indexes
    alone (not the text encoder's where it stays on the CPU of a GPU's run in bfloat16, reading its
    file: its bytes are then in neither memory's count)."""
    needed = device.type == "cpu" or not options["t5_cpu"] or options["dtype"] == torch.float32
    text_encoder = meta_encoder(read_checkpoint(root / spec.t5_file)[1]) if needed else None
    dits = {name: dit_class._meta_model(root / folder)[0]
            for name, folder in zip(spec.dit_names, spec.dit_folders, strict=True)}
    audio = None if spec.audio_dir is None else Wav2Vec2Features.meta_model(root / spec.audio_dir)
    vae = meta_vae(root / spec.vae_file)
    return plan_models(device, vae, text_encoder, dits, audio, PlanOptions(**options))


def plan_models(
    device: torch.device,
    vae: nn.Module,
    text_encoder: nn.Module | None,
    dits: dict[str, WanModel],
    audio_encoder: nn.Module | None,
    options: PlanOptions,
) -> WeightPlan:
    """The plan of a pipeline's meta-device, float32 models (changed in place to the dtypes they
    would run in; ``text_encoder`` may be None under ``t5_cpu`` on a GPU) under ``options``. On the
    CPU every model is in its memory, whatever ``offload_model``, ``t5_cpu`` and ``stream_blocks`` say."""
    meta_models: dict[str, nn.Module] = {VAE: vae}
    if text_encoder is not None:
        meta_models[TEXT_ENCODER] = text_encoder.to(torch.float32 if options.dtype == torch.float32
                                                    else torch.bfloat16)
    keep_float32 = not (options.convert_model_dtype or options.dit_fsdp)
    for name, model in dits.items():
        label = dit_label(name, list(dits))
        meta_models[label] = prepare_dit(model, options.dtype, keep_float32, options.dit_fp8)
    if audio_encoder is not None:
        meta_models[AUDIO_ENCODER] = audio_encoder
    # In inference mode, as loading leaves them: a training-mode wav2vec2 masks and drops at random.
    return _placed(device, {name: model.eval() for name, model in meta_models.items()}, options)


def _placed(device: torch.device, meta_models: dict[str, nn.Module], options: PlanOptions) -> WeightPlan:
    """The plan of ``plan_models``'s prepared ``meta_models`` under ``options``."""
    on_cpu = device.type == "cpu"
    offload_model = options.offload_model and not on_cpu
    t5_cpu = options.t5_cpu and not on_cpu
    stream_blocks = 0 if on_cpu else options.stream_blocks
    models = {VAE: Footprint(module_bytes(meta_models[VAE]))}
    moving = []
    text_encoder = meta_models.get(TEXT_ENCODER)
    if not t5_cpu and text_encoder is not None:
        if options.t5_fsdp and options.world > 1:
            blocks = list(text_encoder.encoder.block)
            models[TEXT_ENCODER] = sharded(text_encoder, blocks, options.world, root_buffer_kept=True)
        else:
            models[TEXT_ENCODER] = Footprint(module_bytes(text_encoder))
            moving.append(TEXT_ENCODER)
    for label, model in meta_models.items():
        if is_dit(label):
            models[label] = dit_footprint(model, stream_blocks, options.world if options.dit_fsdp else 1)
            moving.append(label)
    if AUDIO_ENCODER in meta_models:
        models[AUDIO_ENCODER] = Footprint(module_bytes(meta_models[AUDIO_ENCODER]))
        moving.append(AUDIO_ENCODER)
    return WeightPlan(device, models, tuple(moving) if offload_model else (), options, meta_models)
