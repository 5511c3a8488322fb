"""The ``wan_runtime.generate`` command line's validation; its flags are
``wan_runtime.cli_parser``'s.

``resolve`` checks everything that can be checked without loading a model (values, sizes, the
image, the checkpoint folder's files, the output folder, the device) and reports every problem at
once.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image

import wan_kernels
from wan_runtime import demo
from wan_runtime.audio_io import decode_audio
from wan_runtime.cache.config import CacheConfig, InvalidCacheConfig, idle_settings
from wan_runtime.checks import (
    MAX_SEED,
    PLACEMENT_FLAGS,
    check_clip_seeds,
    check_cuda_graphs,
    check_dit_fp8,
    check_frame_num,
    check_infer_frames,
    check_num_clip,
    check_seed,
    check_stream_blocks,
    check_vae_tiling,
)
from wan_runtime.cli_parser import (
    DEFAULT_DTYPE,
    DEFAULT_INFER_FRAMES,
    DEFAULT_SOLVER,
    DTYPES,
    LORA_FLAGS,
    OFFICIAL_REFERT_NUM,
)
from wan_runtime.distributed.launch import Launch
from wan_runtime.errors import InputError, WanError
from wan_runtime.image_io import CheckedImage
from wan_runtime.lora import Lora, check_loras
from wan_runtime.lora.lightning_folder import LIGHTNING_SAMPLING, folder_loras
from wan_runtime.models.audio_encoder import speech_clip_count
from wan_runtime.parallel_checks import check_heads, check_heads_split, parallel_problems
from wan_runtime.pose_video import probe_video
from wan_runtime.solvers import SOLVER_NAMES as SOLVERS
from wan_runtime.solvers.schedule import NUM_TRAIN_TIMESTEPS
from wan_runtime.tasks import HIGH_NOISE, LOW_NOISE, TASKS, TaskSpec, check_checkpoint_dir
from wan_runtime.tiny_checkpoints import dit_heads
from wan_runtime.video_io import name_max, writer_problem

T = TypeVar("T")

# The command-line flags of Pipeline.generate's sampling arguments.
_SAMPLING_FLAGS = {"sample_solver": "sample_solver", "sampling_steps": "sample_steps",
                   "shift": "sample_shift", "guide_scale": "sample_guide_scale"}

_BEACH_CAT = (
    "Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard. The "
    "fluffy-furred feline gazes directly at the camera with a relaxed expression. Blurred beach "
    "scenery forms the background featuring crystal-clear waters, distant green hills, and a blue "
    "sky dotted with white clouds. The cat assumes a naturally relaxed posture, as if savoring the "
    "sea breeze and warm sunlight. A close-up shot highlights the feline's intricate details and "
    "the refreshing atmosphere of the seaside."
)
# The official EXAMPLE_PROMPT, used when --prompt is not given.
EXAMPLE_PROMPT = {
    "i2v-A14B": _BEACH_CAT,
    "ti2v-5B": (
        "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a "
        "spotlighted stage."
    ),
    "s2v-14B": _BEACH_CAT,
}
S2V = "s2v-14B"


class InvalidArguments(InputError):
    """Every problem found in the command line, one user-facing message each; ``own``: those of
    them that concern this process of a torchrun launch alone (the others every process finds)."""

    def __init__(self, problems: list[str], own: list[str] | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.own = own or []


@dataclass(frozen=True)
class GenerateConfig:
    """A validated command line with every default resolved.

    ``ckpt_dir`` is None for ``--demo`` (the demo writes its own); ``image`` is the decoded RGB
    input image (None for text-to-video); ``save_file`` None means the official default name,
    chosen when the video is written. s2v-14B only: ``audio`` is the decoded speech (mono 16 kHz
    samples; the demo's built-in sound when ``audio_path`` is None), ``num_clip``,
    ``infer_frames``, ``start_from_ref`` and ``pose_video`` (checked: its first frame decodes) as
    the official flags. ``launch`` is this process's place in a ``torchrun`` launch (``device``
    is then its own GPU); ``ulysses_size``, ``dit_fsdp`` and ``t5_fsdp`` as the official flags.
    ``loras``: the LoRAs of ``--lora_dir``, ``--lora``, ``--lora_high_noise`` and
    ``--lora_low_noise``; ``lora_flags``: those flags as given, (dest, value) with absolute paths;
    ``stream_blocks``, ``dit_fp8`` and ``cuda_graphs`` as ``load_pipeline``'s; ``fit_memory``:
    ``--fit_memory``'s request (None without it: the placement flags stand as resolved);
    ``vae_tiling`` the decode's tile size in pixels (0: whole frames); ``dry_run``: check, print
    the plan, load nothing;
    ``batch_line``: the line of the ``--batch`` file this video comes from (None without one).
    """

    task: str
    ckpt_dir: Path | None
    demo: bool
    size: str
    frame_num: int
    sample_steps: int
    sample_shift: float
    sample_guide_scale: float | tuple[float, float]
    sample_solver: str
    base_seed: int
    prompt: str
    negative_prompt: str
    image_path: Path | None
    image: Image.Image | CheckedImage | None
    save_file: Path | None
    device: str
    dtype: torch.dtype
    offload_model: bool
    t5_cpu: bool
    convert_model_dtype: bool
    compile: bool
    debug: bool
    cache: CacheConfig
    ulysses_size: int = 1
    dit_fsdp: bool = False
    t5_fsdp: bool = False
    launch: Launch = Launch()
    audio_path: Path | None = None
    audio: np.ndarray | None = None
    num_clip: int | None = None
    infer_frames: int = DEFAULT_INFER_FRAMES
    start_from_ref: bool = False
    pose_video: Path | None = None
    loras: tuple[Lora, ...] = ()
    lora_flags: tuple[tuple[str, str], ...] = ()
    stream_blocks: int = 0
    fit_memory: FitMemory | None = None
    dit_fp8: bool = False
    cuda_graphs: bool = False
    vae_tiling: int = 0
    dry_run: bool = False
    batch_line: int | None = None


class FitMemory(NamedTuple):
    """``--fit_memory``: the budget in GiB (None: the GPU's free memory less a reserve) and the
    placement flags the command line gave, which the fit keeps (``PLACEMENT_FLAGS``)."""

    budget_gib: float | None
    given: tuple[str, ...]


class DecodedInputs:
    """Input files decoded once for all the videos of a command line (the lines of a batch share
    its ``--image``, ``--audio`` or ``--lora_dir``), by kind and resolved path; failures are not
    kept."""

    def __init__(self) -> None:
        self._decoded: dict[tuple[str, Path], object] = {}

    def get(self, kind: str, path: Path, decode: Callable[[], T]) -> T:
        """``decode()``'s result for ``path``, decoded the first time only."""
        key = (kind, path.resolve())
        if key not in self._decoded:
            self._decoded[key] = decode()
        return self._decoded[key]


def resolved_offload(offload_model: bool | None, launch: Launch) -> bool:
    """``--offload_model`` as given, else the official script's default: one process offloads,
    the processes of a torchrun launch do not."""
    return (not launch.distributed) if offload_model is None else offload_model


def resolve(
    args: argparse.Namespace, inputs: DecodedInputs | None = None, line: Iterable[str] = ()
) -> GenerateConfig:
    """Validate parsed ``args`` and fill in the defaults; raises ``InvalidArguments`` listing
    every problem. Nothing here loads model weights. ``inputs`` shares decoded input files with
    other calls (a batch's lines); ``line`` names the flags of ``args`` a batch line set."""
    inputs = inputs or DecodedInputs()
    if args.lora_dir is not None:  # the Lightning release's sampling, but for what is given
        release = {flag: LIGHTNING_SAMPLING[name] for name, flag in _SAMPLING_FLAGS.items()}
        args = argparse.Namespace(**{**vars(args), **{
            flag: value for flag, value in release.items() if getattr(args, flag) is None}})
    solver = DEFAULT_SOLVER if args.sample_solver is None else args.sample_solver
    problems: list[str] = []
    spec = TASKS.get(args.task)
    if spec is None:
        problems.append(f"unknown task {args.task!r}; choose one of {', '.join(TASKS)}")

    ckpt_dir = None if args.ckpt_dir is None else Path(args.ckpt_dir)
    checkpoint_ok = False
    if args.demo and ckpt_dir is not None:
        problems.append("--demo writes and uses its own random checkpoint; drop --ckpt_dir")
    elif not args.demo and ckpt_dir is None:
        problems.append("--ckpt_dir is required: pass the task's official checkpoint folder (or try --demo)")
    elif spec is not None and ckpt_dir is not None:
        checkpoint_ok = _check(problems, lambda: check_checkpoint_dir(spec.name, ckpt_dir)) is not None

    # Unset values come from the demo's settings or the task's official ones.
    base = None if spec is None else demo.DEMO_SETTINGS if args.demo else spec
    size = _given_or_default(args.size, base, "default_size")
    if spec is not None:
        problems += _size_problems(spec, size, args.demo)
    # The official script parses --frame_num for every task and never passes it to s2v.
    frame_num_ignored = args.task == S2V and args.frame_num is not None
    if frame_num_ignored:
        warnings.warn("--frame_num is ignored by s2v-14B: the video follows the audio's length, "
                      "--infer_frames frames per clip (at most --num_clip clips)", stacklevel=2)
    frame_num = _given_or_default(None if frame_num_ignored else args.frame_num, base, "frame_num")
    if frame_num is not None and spec is not None:
        _check(problems, lambda: check_frame_num(frame_num, spec, flag="--"))
    steps = _given_or_default(args.sample_steps, base, "sampling_steps")
    if steps is not None and not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        # Past the training timesteps the official schedule, of whole timesteps, repeats them.
        problems.append(f"--sample_steps must be a number of steps from 1 to {NUM_TRAIN_TIMESTEPS} (the "
                        f"timesteps the models were trained on), got {steps}")
    if args.sample_guide_scale is not None and not 0 <= args.sample_guide_scale < math.inf:
        problems.append(f"--sample_guide_scale must be a finite number >= 0, got {args.sample_guide_scale}")
    if args.sample_shift is not None and not 0 < args.sample_shift < math.inf:
        problems.append(f"--sample_shift must be a finite number > 0, got {args.sample_shift}")
    _check(problems, lambda: check_seed(args.base_seed, "--base_seed"))
    if solver not in SOLVERS:
        problems.append(f"unknown --sample_solver {solver!r}; choose {', '.join(SOLVERS)}")

    image_path = None if args.image is None else Path(args.image)
    image = None
    if image_path is not None:
        image = _check(problems, lambda: inputs.get("image", image_path,
                                                    lambda: CheckedImage.check(args.image, "--image")))
    elif args.task in ("i2v-A14B", S2V):
        if args.demo:
            image = demo.demo_image()
        else:
            problems.append(f"{args.task} generates from an image: pass --image")
    speech = _s2v_problems(problems, args, inputs)

    save_file = None if args.save_file is None else Path(args.save_file)
    launch = _check(problems, Launch.from_env) or Launch()
    # Rank 0 writes the video; the processes of its machine see the same folders.
    save_problems = _save_file_problems(args.save_file, on_writers_machine=launch.on_main_machine)
    if save_file is not None and launch.on_main_machine and not save_problems:
        save_problems = _replaced_file_problems(args, save_file)
    problems += save_problems
    writer = writer_problem() if launch.on_main_machine else None
    if writer is not None:
        problems.append(f"cannot write the video: {writer}")
    if args.verify_checkpoint:
        problems += _verify_problems(args.demo, launch)
    device = args.device or (demo.DEMO_SETTINGS.device if args.demo else
                             "cuda" if torch.cuda.is_available() else "cpu")
    bad_device = _device_problems(device)
    problems += bad_device
    offload_model = resolved_offload(args.offload_model, launch)
    own: list[str] = []  # this process's alone
    if launch.distributed:
        device = _process_device(own, device, launch)
    if spec is not None:
        parallel = parallel_problems(spec, launch.world, args.ulysses_size, args.dit_fsdp, args.t5_fsdp,
                                     offload_model, bool(args.t5_cpu), flag="--")
        problems += parallel
        if not parallel and args.ulysses_size > 1:
            if checkpoint_ok:
                _check(problems, lambda: check_heads(spec, ckpt_dir, args.ulysses_size))
            elif args.demo:
                _check(problems, lambda: check_heads_split(dit_heads(spec.name), args.ulysses_size))
    if launch.distributed and args.ulysses_size == 1 and not (args.dit_fsdp or args.t5_fsdp):
        warnings.warn(f"{launch.world} processes share no work without --ulysses_size, --dit_fsdp or "
                      "--t5_fsdp: each makes the whole video and rank 0 alone writes it", stacklevel=2)
    dtype_name = args.dtype or (demo.DEMO_SETTINGS.dtype if args.demo else DEFAULT_DTYPE)
    if dtype_name not in DTYPES:
        problems.append(f"unknown --dtype {dtype_name!r}; choose {' or '.join(DTYPES)}")

    if spec is not None and args.negative_prompt:
        given = args.sample_guide_scale
        _warn_unused_negative_prompt(spec.guide_scale if given is None else given)
    problems += _unsupported_flag_problems(args)
    stream_blocks = 0 if args.stream_blocks is None else args.stream_blocks
    _check(problems, lambda: check_stream_blocks(stream_blocks, args.dit_fsdp, flag="--"))
    _check(problems, lambda: check_dit_fp8(args.dit_fp8, args.dit_fsdp, flag="--"))
    if args.cuda_graphs and not bad_device:
        _check(problems, lambda: check_cuda_graphs(torch.device(device), stream_blocks, args.dit_fsdp,
                                                   args.ulysses_size, flag="--"))
    vae_tiling = _check(problems, lambda: check_vae_tiling(args.vae_tiling, "--vae_tiling"))
    fit_memory = _fit_memory(problems, args, device)
    if device == "cpu":
        _warn_placement_on_cpu(args, stream_blocks)
    loras = _lora_problems(problems, args, spec, inputs)
    try:
        wan_kernels.get_backend()
    except ValueError as err:  # a bad WAN_KERNELS_BACKEND
        problems.append(str(err))

    cache = None
    given = {name: getattr(args, name) for name in CacheConfig().as_dict() if getattr(args, name) is not None}
    idle = idle_settings(given)
    problems += _idle_cache_flag_problems(idle, () if args.batch is None else given.keys() - set(line))
    try:
        # Without the settings just refused, which CacheConfig would refuse again.
        cache = CacheConfig(**{name: value for name, value in given.items()
                               if not any(name in names for names in idle.values())})
    except InvalidCacheConfig as err:
        problems += err.problems
    if cache is not None and spec is not None:
        problems += _cache_policy_problems(cache, spec)

    if problems or own:
        raise InvalidArguments(problems + own, own)
    return GenerateConfig(
        task=spec.name,
        ckpt_dir=ckpt_dir,
        demo=args.demo,
        size=size,
        frame_num=frame_num,
        sample_steps=steps,
        sample_shift=spec.shift if args.sample_shift is None else args.sample_shift,
        sample_guide_scale=spec.guide_scale if args.sample_guide_scale is None else args.sample_guide_scale,
        sample_solver=solver,
        base_seed=args.base_seed,
        prompt=EXAMPLE_PROMPT[spec.name] if args.prompt is None else args.prompt,
        negative_prompt=args.negative_prompt or "",
        image_path=image_path,
        image=image,
        save_file=save_file,
        device=device,
        dtype=DTYPES[dtype_name],
        offload_model=offload_model,
        t5_cpu=bool(args.t5_cpu),
        convert_model_dtype=args.convert_model_dtype,
        compile=args.compile,
        debug=args.debug,
        cache=cache,
        ulysses_size=args.ulysses_size,
        dit_fsdp=args.dit_fsdp,
        t5_fsdp=args.t5_fsdp,
        launch=launch,
        loras=loras,
        lora_flags=_lora_flags(args),
        stream_blocks=stream_blocks,
        fit_memory=fit_memory,
        dit_fp8=args.dit_fp8,
        cuda_graphs=args.cuda_graphs,
        vae_tiling=vae_tiling,
        dry_run=args.dry_run,
        **speech,
    )


def _fit_memory(problems: list[str], args: argparse.Namespace, device: str) -> FitMemory | None:
    """``--fit_memory``'s request, or None without the flag; refused where there is no GPU's
    memory to fit (the CPU)."""
    if args.fit_memory is None:
        return None
    budget = None if args.fit_memory is True else args.fit_memory
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        problems.append(f"--fit_memory takes a GPU memory budget in GiB above 0 (or none: the GPU's free "
                        f"memory), got {budget:g}")
    if device == "cpu":
        gpu = "pass --device cuda" if torch.cuda.is_available() else (
            f"run where torch sees a GPU; this torch, {torch.__version__}, sees none")
        problems.append("--fit_memory places the models for a GPU's memory; on the CPU every model is in its "
                        f"memory (leave it out, or {gpu})")
    return FitMemory(budget, tuple(name for name in PLACEMENT_FLAGS if getattr(args, name) is not None))


def _warn_unused_negative_prompt(guide_scale: float | tuple[float, float]) -> None:
    """Guidance at scale 1 is the conditional prediction alone: no negative prompt reaches it."""
    scales = guide_scale if isinstance(guide_scale, tuple) else (guide_scale,)
    if all(scale == 1 for scale in scales):
        warnings.warn("--negative_prompt has no effect at --sample_guide_scale 1 (guidance then uses the "
                      "prompt alone)", stacklevel=3)


def _warn_placement_on_cpu(args: argparse.Namespace, stream_blocks: int) -> None:
    """Warn of each placement flag given that moves nothing on the CPU, where every model is in
    CPU memory already."""
    given = [flag for flag, on in (("--offload_model True", args.offload_model), ("--t5_cpu", args.t5_cpu),
                                    ("--stream_blocks", stream_blocks > 0)) if on]
    if given:
        verb = "changes" if len(given) == 1 else "change"
        warnings.warn(f"{' and '.join(given)} {verb} nothing on the CPU, where every model already is in CPU "
                      "memory", stacklevel=3)


def _lora_problems(
    problems: list[str], args: argparse.Namespace, spec: TaskSpec | None, inputs: DecodedInputs
) -> tuple[Lora, ...]:
    """The LoRAs the flags ask for, each checked as ``load_pipeline`` will before reading it (a
    Lightning folder's alphas read once for all the lines of a batch)."""
    flags = {"--lora": (args.lora, None), "--lora_high_noise": (args.lora_high_noise, HIGH_NOISE),
             "--lora_low_noise": (args.lora_low_noise, LOW_NOISE)}
    loras = []
    if args.lora_dir == "":
        problems.append("--lora_dir is empty; give a Wan2.2-Lightning LoRA folder (an empty one leaves out "
                        "the LoRAs of a --settings_from video)")
    elif args.lora_dir is not None and spec is not None:
        folder, strength = split_lora(args.lora_dir)
        if strength is None:
            problems.append(_strength_problem("--lora_dir", args.lora_dir, folder))
        else:
            loras += _check(problems, lambda: inputs.get(
                f"lora_dir {spec.name} {strength}", Path(folder),
                lambda: folder_loras(folder, spec.name, strength))) or []
    for flag, (values, expert) in flags.items():
        for value in values:
            if not value:  # what --settings_from takes for none of the video's LoRAs
                problems.append(f"{flag} is empty; give a LoRA file (an empty one leaves out the LoRAs of a "
                                "--settings_from video)")
                continue
            if expert is not None and spec is not None and len(spec.dit_names) == 1:
                problems.append(f"{flag} is for i2v-A14B's experts; {spec.name} has one DiT: use --lora")
                continue
            path, strength = split_lora(value)
            if strength is None:
                problems.append(_strength_problem(flag, value, path))
                continue
            lora = Lora(path, strength, expert)
            try:
                if spec is not None:
                    check_loras([lora], spec.name, spec.dit_names)
            except InputError as err:
                problems.append(str(err))
                continue
            loras.append(lora)
    return tuple(loras)


def _lora_flags(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The LoRA flags ``args`` gives, as (dest, value) with each path absolute: what a video
    records, so that the same files merge at the same strengths from any folder."""
    given = [("lora_dir", args.lora_dir)] if args.lora_dir is not None else []
    given += [(dest, value) for dest in LORA_FLAGS for value in getattr(args, dest)]
    return tuple((dest, absolute_lora(value)) for dest, value in given)


def absolute_lora(value: str) -> str:
    """A LoRA flag's ``PATH[=STRENGTH]`` with the path absolute and the strength as typed."""
    path = split_lora(value)[0]
    return f"{Path(path).absolute()}{value[len(path):]}"


def _strength_problem(flag: str, value: str, path: str) -> str:
    return f"{flag} {value!r}: the strength after '=' must be a finite number (e.g. {flag} {path}=0.8)"


def split_lora(value: str) -> tuple[str, float | None]:
    """``PATH`` or ``PATH=STRENGTH`` -> (path, strength); strength None when it is not a finite
    number. An existing file or folder is a path even when its name holds '='."""
    path, sep, strength = value.rpartition("=")
    if not sep or Path(value).exists():
        return value, 1.0
    try:
        number = float(strength)
    except ValueError:
        return path, None
    return path, number if math.isfinite(number) else None


def _s2v_problems(problems: list[str], args: argparse.Namespace, inputs: DecodedInputs) -> dict[str, object]:
    """The s2v-14B fields of ``GenerateConfig`` (empty for the other tasks, which refuse the s2v
    flags); the speech is decoded here, so a bad file is refused before any model loads."""
    tts = {"--tts_prompt_audio": args.tts_prompt_audio, "--tts_prompt_text": args.tts_prompt_text,
           "--tts_text": args.tts_text}
    values = {"--audio": args.audio, "--num_clip": args.num_clip, "--infer_frames": args.infer_frames,
              "--pose_video": args.pose_video, **tts}
    given = [flag for flag, value in values.items() if value is not None]
    given += [flag for flag, on in (("--start_from_ref", args.start_from_ref),
                                    ("--enable_tts", args.enable_tts)) if on]
    tts_given = [flag for flag in ("--enable_tts", *tts) if flag in given]
    if tts_given:  # for no task, so said first
        problems.append(f"{tts_given[0]}: text-to-speech is out of scope of wan_runtime; record or "
                        "synthesise the speech elsewhere and pass it with --audio (to --task s2v-14B)")
    if args.task != S2V:
        problems += [f"{flag} is for --task s2v-14B only" for flag in given if flag not in tts_given]
        return {}
    base = demo.DEMO_SETTINGS if args.demo else None
    infer_frames = _given_or_default(args.infer_frames, base, "infer_frames")
    infer_frames = DEFAULT_INFER_FRAMES if infer_frames is None else infer_frames
    frames_ok = _check(problems, lambda: check_infer_frames(infer_frames, "--infer_frames")) is not None
    try:
        check_num_clip(args.num_clip, "--num_clip")
        clips_ok = True
    except InputError as err:
        problems.append(str(err))
        clips_ok = False
    audio_path = None if args.audio is None else Path(args.audio)
    audio = None
    if audio_path is not None:
        audio = _check(problems, lambda: inputs.get("audio", audio_path,
                                                    lambda: decode_audio(args.audio, "--audio")))
    elif args.demo:
        audio = demo.demo_audio()
    elif not args.enable_tts:
        problems.append("s2v-14B is driven by speech: pass --audio (a WAV, MP3, FLAC or other audio file)")
    if audio is not None and frames_ok and clips_ok and 0 <= args.base_seed <= MAX_SEED:
        # Clip r is seeded with base_seed + r: a seed near 2**64 fails here, not after loading.
        clips = speech_clip_count(audio.size, infer_frames, TASKS[S2V].fps, args.num_clip)
        _check(problems, lambda: check_clip_seeds(args.base_seed, clips, "--base_seed"))
    pose_video = None if args.pose_video is None else Path(args.pose_video)
    if pose_video is not None:
        _check(problems, lambda: probe_video(args.pose_video, "--pose_video"))
    return {"audio_path": audio_path, "audio": audio, "num_clip": args.num_clip, "infer_frames": infer_frames,
            "start_from_ref": args.start_from_ref, "pose_video": pose_video}


def _idle_cache_flag_problems(idle: dict[str, list[str]], command_line: Iterable[str]) -> list[str]:
    """Cache settings given without their cache (``idle_settings``): they would change nothing,
    silently (for a line of a batch, the line's null drops a ``command_line`` setting)."""
    problems = []
    for gate, names in sorted(idle.items()):
        for name in names:
            drop = (f' (a --batch line drops the command line\'s with "{name}": null)'
                    if name in command_line else "")
            problems.append(f"--{name} has no effect without --{gate}; add --{gate} or drop it{drop}")
    return problems


# Official flags of features wan_runtime does not serve, and what to do instead.
_UNSUPPORTED = {
    "use_prompt_extend": "prompt extension is out of scope; extend the prompt elsewhere and pass it with "
                         "--prompt",
    **dict.fromkeys(("src_root_path", "refert_num", "replace_flag", "use_relighting_lora"),
                    "the animate-14B task is not served by wan_runtime; drop the flag"),
}


def _unsupported_flag_problems(args: argparse.Namespace) -> list[str]:
    """The official flags accepted for compatibility, each refused, under its own name, when it
    differs from the official default (a script that spells out the defaults runs)."""
    asked = {
        "use_prompt_extend": args.use_prompt_extend,
        "src_root_path": args.src_root_path is not None,
        "refert_num": args.refert_num != OFFICIAL_REFERT_NUM,
        "replace_flag": args.replace_flag,
        "use_relighting_lora": args.use_relighting_lora,
    }
    return [f"--{flag}: {_UNSUPPORTED[flag]}" for flag, on in asked.items() if on]


def _cache_policy_problems(cache: CacheConfig, spec: TaskSpec) -> list[str]:
    """A TeaCache policy that cannot serve the task's DiTs (``poly`` without fitted
    coefficients), refused before loading; ``CacheConfig.check_models`` refuses it in Python."""
    if cache.serves(spec.cache_models):
        return []
    fitted = [task.name for task in TASKS.values() if cache.serves(task.cache_models)]
    return [
        f"--teacache_policy {cache.teacache_policy} has no fitted coefficients for {spec.name}; tasks with "
        f"fitted coefficients: {', '.join(fitted)} (use --teacache_policy linear for {spec.name})"
    ]


def _given_or_default(given: T | None, base: object | None, field: str) -> T | None:
    return given if given is not None or base is None else getattr(base, field)


def _check(problems: list[str], step: Callable[[], T]) -> T | None:
    """``step()``'s result, or None after adding its ``WanError`` message to ``problems``."""
    try:
        return step()
    except WanError as err:
        problems.append(str(err))
        return None


def _size_problems(spec: TaskSpec, size: str, demo_run: bool) -> list[str]:
    # Real checkpoints only run at the sizes they were trained at; the demo's tiny random
    # weights run at any size the latent grid can hold.
    step = spec.vae_stride[1] * spec.patch_size[1]

    def fits(text: str) -> bool:
        if not demo_run:
            return text in spec.supported_sizes
        match = re.fullmatch(r"(\d+)\*(\d+)", text)
        return match is not None and all(int(v) > 0 and int(v) % step == 0 for v in match.groups())

    if fits(size):
        return []
    # 1280x704 is the usual way to write a size elsewhere.
    starred = re.sub(r"^(\d+)\s*[xX×]\s*(\d+)$", r"\1*\2", size)
    hint = "" if starred == size else f"; sizes are written with a '*'{f': {starred}' * fits(starred)}"
    if not demo_run:
        supported = ", ".join(spec.supported_sizes)
        return [f"size {size} is not supported by {spec.name}; supported sizes: {supported}{hint}"]
    return [f"demo --size must be width*height with both multiples of {step}, got {size!r}{hint}"]


def _save_file_problems(save_file: str | None, on_writers_machine: bool) -> list[str]:
    """What is wrong with ``--save_file``'s name and, on the machine of the process that writes
    the video (rank 0 of a launch), with its folder."""
    if save_file == "":
        return ["--save_file is empty; give a file name ending in .mp4"]
    path = None if save_file is None else Path(save_file)
    if path is not None and path.name.lower() == ".mp4":
        return [f"--save_file {save_file} has no name before .mp4; give e.g. video.mp4"]
    if path is not None and _is_folder(path):
        return [f"--save_file {save_file} is a folder; give a file name ending in .mp4, e.g. "
                f"{path / 'video.mp4'}"]
    if path is not None and path.suffix.lower() != ".mp4":
        shown = save_file if save_file.strip() == save_file else repr(save_file)  # a space it ends in
        return [f"--save_file {shown} must end in .mp4 (the video is written as H.264 MP4)"]
    if not on_writers_machine:
        return []
    folder = Path.cwd() if path is None else path.parent
    # Before anything asks the file system about the path, which it refuses for too long a name.
    limit = name_max(folder)
    if path is not None and len(os.fsencode(path.name)) > limit:
        return [f"--save_file name {path.name[:40]}... is {len(os.fsencode(path.name))} bytes long; the file "
                f"system takes at most {limit}: shorten it"]
    if folder.exists() and not folder.is_dir():
        return [f"cannot write {save_file}: {folder} is a file, not a folder"]
    if not folder.is_dir():
        return [f"cannot write {save_file}: folder {folder} does not exist; create it first"]
    if not os.access(folder, os.W_OK | os.X_OK):
        what = "the default output file" if save_file is None else str(save_file)
        why = ("is on a read-only file system" if _read_only(folder) else
               "is not writable by this user (change its permissions)")
        return [f"cannot write {what}: folder {folder} {why}; or give --save_file in another folder"]
    return []


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


# The flags naming a file the run reads, which its video must not be written over.
_READ_FILES = ("image", "audio", "pose_video", "settings_from", "batch")


def _verify_problems(demo_run: bool, launch: Launch) -> list[str]:
    """What keeps ``--verify_checkpoint`` from this command line."""
    if demo_run:
        return ["--verify_checkpoint checks a downloaded release against its download's records, and "
                "--demo's checkpoint is written here: drop one of the two"]
    if launch.distributed:
        # Hashing 30-70 GB in one process would keep the others waiting in their first collective,
        # whose time-out it can outlast; in every process it would read the release once each.
        return ["--verify_checkpoint reads the whole release: verify it once without torchrun (python -m "
                "wan_runtime.generate --task TASK --ckpt_dir DIR --verify_checkpoint --dry_run), then launch "
                "without the flag"]
    return []


def _replaced_file_problems(args: argparse.Namespace, save_file: Path) -> list[str]:
    """The problem of a ``--save_file`` that is a file the run reads; a warning that an existing
    one will be replaced (unless ``--skip_existing`` keeps it)."""
    if not save_file.is_file():
        return []
    for flag in _READ_FILES:
        given = getattr(args, flag, None)
        if given and Path(given).exists() and os.path.samefile(given, save_file):
            return [f"--save_file {save_file} is the --{flag} file this run reads; give the video another "
                    "name"]
    if not args.skip_existing:
        warnings.warn(f"--save_file {save_file} exists; this run replaces it (--skip_existing keeps it)",
                      stacklevel=3)
    return []


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for the file system, which is_dir does not swallow
        return False


def _process_device(problems: list[str], device: str, launch: Launch) -> str:
    """The device of this process of a several-process launch: its own GPU, cuda:LOCAL_RANK."""
    if device == "cpu" or not device.startswith("cuda"):
        return device
    if device != "cuda":
        problems.append(f"--device {device}: under torchrun each process takes its own GPU, "
                        f"cuda:LOCAL_RANK; pass --device cuda")
        return device
    if torch.cuda.is_available() and launch.local_rank >= torch.cuda.device_count():
        problems.append(f"LOCAL_RANK {launch.local_rank} has no GPU of its own: this machine has "
                        f"{torch.cuda.device_count()}; start at most that many processes on it")
    return f"cuda:{launch.local_rank}"


def _device_problems(device: str) -> list[str]:
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if match is None:
        return [f"unknown --device {device!r}; use cpu, cuda or cuda:N"]
    if device == "cpu":
        return []
    if not torch.cuda.is_available():
        return [f"--device {device}: CUDA is not available (torch {torch.__version__}); use --device cpu"]
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        return [f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"]
    return []
