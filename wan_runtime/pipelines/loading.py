"""``load_pipeline``: a task's checkpoint folder -> a ready ``Pipeline``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from PIL import Image

from wan_runtime.checks import check_cuda_graphs, check_dit_fp8, check_stream_blocks, check_switch
from wan_runtime.distributed.row_split import RowSplit
from wan_runtime.distributed.sharding import shard_module
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.image_io import CheckedImage, load_image
from wan_runtime.inference_only import guard, inference_only_enabled
from wan_runtime.lora import Lora, LoraFile, read_loras
from wan_runtime.models import WanModel, load_text_encoder, load_vae
from wan_runtime.models.audio_encoder import Wav2Vec2Features
from wan_runtime.models.compilation import check_compile_support, check_fp8_compile_support, compile_blocks
from wan_runtime.models.cuda_graphs import StageGraphs
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.models.safetensors_checkpoint import checkpoint_files, same_weights
from wan_runtime.models.t5_checkpoint import check_checkpoint_file
from wan_runtime.models.text_encoder import check_tokenizer_folder
from wan_runtime.models.vae_loading import check_vae_file
from wan_runtime.parallel_checks import check_heads_split, check_parallel
from wan_runtime.pipelines.base import TEXT_ENCODER, Pipeline
from wan_runtime.pipelines.host_memory import check_host_memory, free_to_check
from wan_runtime.pipelines.i2v import I2VPipeline
from wan_runtime.pipelines.inputs import parse_size
from wan_runtime.pipelines.memory_advice import VAE
from wan_runtime.pipelines.memory_plan import WeightPlan, plan_weights
from wan_runtime.pipelines.residency import Residency
from wan_runtime.pipelines.s2v import AUDIO_ENCODER, S2VPipeline
from wan_runtime.pipelines.ti2v import TI2VPipeline
from wan_runtime.tasks import TaskSpec, check_checkpoint_dir, task_spec

_PIPELINES = {
    "i2v-A14B": I2VPipeline,
    "ti2v-5B": TI2VPipeline,
    "s2v-14B": S2VPipeline,
}
_DTYPES = (torch.bfloat16, torch.float32)
_CPU = torch.device("cpu")


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(
            f"device {device!r} is not a torch device; use e.g. 'cuda', 'cuda:1' or 'cpu'"
        ) from err
    if resolved.type not in ("cuda", "cpu"):
        raise InputError(f"device {device!r}: the runtime runs on NVIDIA GPUs (CUDA) and the CPU; use "
                         "'cuda', 'cuda:N' or 'cpu'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asks for CUDA, which this machine lacks; use device='cpu'")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved


def check_output_size(
    task: str, image: Image.Image | CheckedImage | str | Path | None, size: str
) -> tuple[int, int]:
    """The video's (width, height) for ``task``'s target ``size`` ``"W*H"`` and the input
    ``image`` (a PIL image, a ``CheckedImage``, or a file path read as ``generate`` reads it), as
    ``generate`` makes it, without loading a model; ``InputError`` for an image that cannot be read
    or fit."""
    spec = task_spec(task)
    width, height = parse_size(size, spec)
    # An image given is used as it is (its size alone counts): reading it again would repeat the
    # warnings its reading gave.
    picture = image if image is None or isinstance(image, (Image.Image, CheckedImage)) else load_image(image)
    return _PIPELINES[spec.name].output_size(spec, picture, width, height)


def check_pipeline(task: str, ckpt_dir: str | Path, *, check_fits: bool = True, **options: Any) -> WeightPlan:
    """Run every check ``load_pipeline`` makes before it loads a model, with its arguments
    (``options``: its keyword arguments), and load nothing: the settings, the release folder's
    files, the T5 and VAE archives, every DiT's config and headers, the speech encoder's weights,
    the LoRA files and their fit, and that the weights fit in the GPU's memory and in the
    machine's free CPU memory (unless not ``check_fits``; ``wan_runtime.pipelines.host_memory``).
    Raises what ``load_pipeline`` would (``InputError``, ``CheckpointError``); returns the weights'
    memory plan (``wan_runtime.pipelines.memory_plan``)."""
    return checked_plan("check_pipeline", task, ckpt_dir, options, check_fits)


def checked_plan(
    caller: str, task: str, ckpt_dir: str | Path, options: Mapping[str, Any], check_fits: bool = True
) -> WeightPlan:
    """``check_pipeline`` for ``caller``, a function taking ``load_pipeline``'s arguments
    (``options``: its keyword arguments), which the error for an argument it does not take names."""
    try:
        arguments = inspect.signature(load_pipeline).bind(task, ckpt_dir, **options)
    except TypeError as err:
        raise InputError(f"{caller} takes load_pipeline's arguments: {err}") from err
    arguments.apply_defaults()
    return _checked(arguments.arguments, check_fits).plan


class _Checked(NamedTuple):
    """What ``load_pipeline``'s checks resolve: the DiTs' class, each DiT's LoRA files with their
    strengths, each DiT's label for messages, and the weights' memory plan."""

    spec: TaskSpec
    device: torch.device
    root: Path
    dit_class: type[WanModel]
    dit_loras: dict[str, list[tuple[LoraFile, float]]]
    labels: dict[str, str]
    plan: WeightPlan


def _checked(arguments: Mapping[str, Any], check_fits: bool = True) -> _Checked:
    """``load_pipeline``'s checks of its ``arguments``, given in its parameters' order, and the
    weights' memory plan, checked against a GPU's memory and the free CPU memory when
    ``check_fits`` (headers and archive indexes, and the checksums of the T5 and VAE archives,
    which loading then does not read again: seconds on the release's 11 GB T5)."""
    (task, ckpt_dir, device, dtype, offload_model, t5_cpu, convert_model_dtype, compile, ulysses_size,
     dit_fsdp, t5_fsdp, loras, stream_blocks, dit_fp8, cuda_graphs) = arguments.values()
    if not isinstance(ckpt_dir, (str, os.PathLike)):
        raise InputError(f"ckpt_dir must be the release folder's path (str or Path), got {ckpt_dir!r}")
    switches = {"offload_model": offload_model, "t5_cpu": t5_cpu, "convert_model_dtype": convert_model_dtype,
                "compile": compile, "dit_fsdp": dit_fsdp, "t5_fsdp": t5_fsdp, "dit_fp8": dit_fp8,
                "cuda_graphs": cuda_graphs}
    for name, value in switches.items():
        check_switch(value, name)
    spec = check_checkpoint_dir(task, ckpt_dir)
    if dtype not in _DTYPES:
        raise InputError(f"dtype must be torch.bfloat16 (the official) or torch.float32, got {dtype!r}")
    device = _resolve_device(device)
    check_stream_blocks(stream_blocks, dit_fsdp)
    check_dit_fp8(dit_fp8, dit_fsdp)
    check_parallel(spec, device, ulysses_size, dit_fsdp, t5_fsdp, offload_model, t5_cpu)
    if device.type == "cuda" and (ulysses_size > 1 or dit_fsdp or t5_fsdp):
        # FSDP puts its shards, and collectives their buffers, on the current device.
        torch.cuda.set_device(device)
    if compile:
        check_compile_support(device)
        if dit_fp8:
            check_fp8_compile_support(device)
    if cuda_graphs:
        check_cuda_graphs(device, stream_blocks, dit_fsdp, ulysses_size)
    inference_only_enabled()  # a bad WAN_INFERENCE_ONLY value fails before minutes of loading
    root = Path(ckpt_dir)
    names = spec.dit_names
    dit_class = WanModel if spec.audio_dir is None else WanModelS2V
    dit_loras = read_loras(loras, spec.name, names)
    labels = {name: spec.name if len(names) == 1 else f"{spec.name} {name.replace('_', '-')}"
              for name in names}
    # A bad file fails before minutes of loading: a truncated T5 or VAE archive, a DiT folder (config,
    # shards, headers, tensor names and shapes), the speech encoder's weights.
    check_checkpoint_file(root / spec.t5_file)
    check_tokenizer_folder(root / spec.tokenizer_dir)
    check_vae_file(root / spec.vae_file)
    out_dims = {}
    for name, folder in zip(names, spec.dit_folders, strict=True):
        config = dit_class.check_pretrained(root / folder, dit_loras[name], labels[name])
        if config.model_type != spec.model_type:
            raise CheckpointError(f"{root / folder} holds a {config.model_type} DiT (its config.json's "
                                  f"model_type), and {spec.name}'s is {spec.model_type}: the folder is of "
                                  f"another release; download {spec.name}'s")
        out_dims[root / folder] = config.out_dim
        if config.text_len < spec.text_len:
            raise CheckpointError(f"{root / folder / 'config.json'}: text_len {config.text_len} holds fewer "
                                  f"tokens than the {spec.text_len} a prompt's encoding may have; restore "
                                  f"config.json from the release")
        if ulysses_size > 1:
            check_heads_split(config.num_heads, ulysses_size)
    if len(names) == 2 and same_weights(*(checkpoint_files(root / folder) for folder in spec.dit_folders)):
        first, second = spec.dit_folders
        raise CheckpointError(f"{root / first} and {root / second} hold the same weights, and {spec.name}'s "
                              f"two experts differ: one folder was copied over the other; download {second} "
                              f"(or {first}) again")
    if spec.audio_dir is not None:
        Wav2Vec2Features.check_pretrained(root / spec.audio_dir)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    weights = plan_weights(spec, root, device, dit_class, dtype=dtype, offload_model=offload_model,
                           t5_cpu=t5_cpu, convert_model_dtype=convert_model_dtype, dit_fsdp=dit_fsdp,
                           t5_fsdp=t5_fsdp, stream_blocks=stream_blocks, dit_fp8=dit_fp8, world=world,
                           cuda_graphs=cuda_graphs)
    _check_latents(root / spec.vae_file, weights.meta_models[VAE].z_dim, out_dims)
    if device.type == "cuda" and check_fits:
        weights.check_fits(torch.cuda.get_device_properties(device).total_memory)
    if check_fits:
        check_host_memory(weights, free_to_check())
    return _Checked(spec, device, root, dit_class, dit_loras, labels, weights)


def _check_latents(vae_file: Path, z_dim: int, out_dims: Mapping[Path, int]) -> None:
    """``CheckpointError`` unless each DiT (by folder: the latent channels it makes) makes the
    latents of the VAE of ``vae_file`` (``z_dim`` channels): a Wan2.1 VAE in a Wan2.2 one's place,
    or the reverse, would fail only at the first sampling step, its models loaded."""
    for folder, out_dim in out_dims.items():
        if out_dim != z_dim:
            raise CheckpointError(f"{vae_file} is a VAE of {z_dim}-channel latents, and the DiT in {folder} "
                                  f"makes {out_dim}-channel ones: one of them is of another release "
                                  "(Wan2.1_VAE.pth has 16 channels, Wan2.2_VAE.pth 48); download the "
                                  "release's own")


def load_pipeline(
    task: str,
    ckpt_dir: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    offload_model: bool = False,
    t5_cpu: bool = False,
    convert_model_dtype: bool = False,
    compile: bool = False,
    ulysses_size: int = 1,
    dit_fsdp: bool = False,
    t5_fsdp: bool = False,
    loras: Sequence[Lora | str | os.PathLike] = (),
    stream_blocks: int = 0,
    dit_fp8: bool = False,
    cuda_graphs: bool = False,
) -> Pipeline:
    """Load ``task`` (``"i2v-A14B"``, ``"ti2v-5B"`` or ``"s2v-14B"``) from its official release
    folder ``ckpt_dir``.

    ``device`` defaults to CUDA when available. ``dtype`` is the DiT compute dtype (the text
    encoder runs in bfloat16, float32 when ``dtype`` is float32; the VAE and s2v-14B's wav2vec2 in
    float32, as the official pipelines run them). ``offload_model`` keeps the big models on the
    CPU and brings only the one at work onto the device; ``t5_cpu`` runs the text encoder on the CPU;
    ``convert_model_dtype`` casts every DiT weight to ``dtype``, as the official flag does;
    ``compile`` compiles the DiT blocks with ``torch.compile`` (the first step pays the compile
    time; see ``wan_runtime.models.compilation``). The folder is checked for every file, the T5
    and VAE archives for truncation, every DiT's config and safetensors headers against each other
    and the speech encoder's weights, before anything loads (``CheckpointError``;
    ``check_pipeline`` makes these checks alone); on a GPU, weights that would not fit in its
    memory at once are refused then too (``InputError``; ``wan_runtime.pipelines.memory_plan``), and
    so are weights that would need more CPU memory than the machine has free
    (``wan_runtime.pipelines.host_memory``; offloaded models and streamed blocks wait there). Unless
    ``WAN_INFERENCE_ONLY=0``, the loaded models refuse ``train(True)`` and ``requires_grad_(True)``.

    ``loras``: ``wan_runtime.lora.Lora`` files merged into the DiT weights as they load, each
    with its strength, into every DiT or (i2v-A14B) one expert (a file's path in the list:
    ``Lora(path)``, full strength on every DiT); every file is read and checked
    against the DiTs' shapes before any model loads (``InputError``), and a step then costs what
    it costs without them.

    ``stream_blocks``: how many blocks of each DiT (the last ones; at most all but the first) stay
    in CPU memory and are copied to the device just before they run, one at a time
    (``wan_runtime.models.block_streaming``): the device then holds the rest of the DiT and one
    block, for the same numbers. Not with ``dit_fsdp``, which shards the blocks instead.

    ``dit_fp8``: the DiT blocks' linear layers (about 99% of the weights) store their weights in
    8-bit floats, each row scaled to the format's range, and compute in ``dtype`` from them
    (``wan_runtime.models.fp8_weights``): about half the memory of bfloat16 DiTs on the device or,
    with ``offload_model`` or ``stream_blocks``, in CPU memory and on the bus. Lossy: the video
    differs from the official one. Not with ``dit_fsdp``.

    Several processes (``torchrun``, with ``torch.distributed`` initialised and ``device`` each
    process's own GPU) share one generation, which every process then runs with the same
    arguments, as the official flags of the same names: ``ulysses_size`` (the number of
    processes, or 1) splits every DiT forward's tokens over the processes (Ulysses sequence
    parallelism); ``dit_fsdp`` and ``t5_fsdp`` shard the DiTs' and the text
    encoder's weights over them (FSDP). With any of them the VAE encodes and decodes each video
    split over the processes too, each a band of the rows (``WanVAE.row_split``), for the same
    numbers within float32 rounding. ``dit_fsdp`` computes with every DiT weight in ``dtype``,
    as the official FSDP does (its outputs then match ``convert_model_dtype``'s), and keeps the
    DiTs on the GPUs (no ``offload_model``). The official FSDP also rounds the DiT's floating-point
    inputs to ``dtype``, which for ti2v-5B's per-token timesteps and s2v-14B's audio features
    changes the numbers (timestep 999 becomes 1000 in bfloat16); that rounding is not reproduced.

    ``cuda_graphs``: the DiT blocks run from CUDA graphs, captured at each kind of forward's
    second call and dropped after each denoising loop (a video, an s2v clip) and at i2v-A14B's
    switch of experts (``wan_runtime.models.cuda_graphs``): the same numbers, without the host's
    launches between the blocks' kernels. On CUDA, not with
    ``stream_blocks``, ``dit_fsdp`` or ``ulysses_size`` above 1.
    """
    # At the first line locals() holds the arguments alone, in the parameters' order.
    spec, device, root, dit_class, dit_loras, labels, weights = _checked(locals())
    pipeline_class, names = _PIPELINES[spec.name], spec.dit_names
    rest = _CPU if offload_model else device  # where the big models sit between uses
    residency = Residency(device, offload_model)

    text_dtype = torch.float32 if dtype == torch.float32 else torch.bfloat16
    # A sharded text encoder is read on the CPU (its mapped file) and sharded onto the device.
    text_encoder = load_text_encoder(root, device=_CPU if t5_cpu or t5_fsdp else rest, dtype=text_dtype)
    if t5_fsdp:
        shard_module(text_encoder.model, text_encoder.model.encoder.block, device)
    guard(text_encoder.model)
    if not (t5_cpu or t5_fsdp):
        residency.add(TEXT_ENCODER, text_encoder.model)

    vae = load_vae(root / spec.vae_file, device=device, dtype=torch.float32)
    guard(vae.model)

    graphs = StageGraphs.on(device) if cuda_graphs else None
    dits = {}
    for name, folder in zip(names, spec.dit_folders, strict=True):
        dits[name] = guard(dit_class.from_pretrained(
            root / folder, dtype=dtype, device=rest,
            convert_model_dtype=convert_model_dtype or dit_fsdp, loras=dit_loras[name], label=labels[name],
            merge_device=device, fp8=dit_fp8, host_blocks=stream_blocks,
            fsdp_device=device if dit_fsdp else None,
        ))
        if stream_blocks:
            dits[name].enable_block_streaming(stream_blocks, device)
        if ulysses_size > 1:
            dits[name].enable_sequence_parallel(SequenceParallel.over())
        if compile:
            compile_blocks(dits[name])
        if graphs is not None:
            dits[name].enable_cuda_graphs(graphs)
        residency.add(name, dits[name], dits[name].resident_modules())
    if spec.audio_dir is None:
        pipeline = pipeline_class(spec, device, text_encoder, vae, dits, residency)
    else:
        audio_encoder = Wav2Vec2Features(root / spec.audio_dir, device=rest)
        guard(audio_encoder.model)
        residency.add(AUDIO_ENCODER, audio_encoder.model)
        pipeline = S2VPipeline(spec, device, text_encoder, vae, dits, residency, audio_encoder)
    if weights.options.shared(ulysses_size):
        vae.row_split = RowSplit.over()
    pipeline.weight_plan = weights
    return pipeline
