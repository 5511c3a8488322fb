"""``--settings_from VIDEO``: make a video again, or a variation of it, from the settings stored
in a video ``python -m wan_runtime.generate`` wrote.

Each video stores, beside the account of its run, the flags that make it again (``FLAGS_KEY``,
written by ``recorded_flags``): every setting that decides its frames, resolved (the drawn seed,
the task's or the demo's defaults), with paths made absolute. What only places or schedules the
work (device, offloading, ``--stream_blocks``, ``--compile``, the several-GPU flags) and where the
video goes are not recorded: the command line gives those.

``take_video_settings`` gives each recorded flag the command line leaves out the video's value;
a flag the command line gives keeps its own. Some flags stand together, so that giving one
replaces the video's whole group: the checkpoint (``--ckpt_dir``, ``--demo``) and the LoRAs
(``--lora_dir`` brings its own sampling settings too). Switching one step cache on leaves the
video's other cache out, and ``--no-teacache`` or ``--no-fbcache`` that cache. A command line
naming another task takes none of what belongs to the video's task (checkpoint, size, frames,
sampling, LoRAs, step cache, speech inputs), only the prompts, seed, image and numerics.
"""

from __future__ import annotations

import argparse
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path

from wan_runtime import __version__
from wan_runtime.cache.config import CacheConfig
from wan_runtime.cli_args import DTYPES, GenerateConfig, InvalidArguments, build_parser, json_flag_value
from wan_runtime.errors import InputError
from wan_runtime.lora import Lora
from wan_runtime.video_io import read_mp4_settings

# The key of a video's settings that holds the flags which make it again.
FLAGS_KEY = "flags"

_CACHE = tuple(CacheConfig().as_dict())
_TEACACHE = tuple(name for name in _CACHE if name.startswith("teacache"))
_FBCACHE = tuple(name for name in _CACHE if name.startswith("fb"))
_LORAS = ("lora", "lora_high_noise", "lora_low_noise")
_SAMPLING = ("sample_steps", "sample_shift", "sample_guide_scale", "sample_solver")
_SPEECH = ("audio", "num_clip", "infer_frames", "start_from_ref", "pose_video")
# What a video's task decides, not taken for another task.
_TASK_BOUND = frozenset(("ckpt_dir", "size", "frame_num", *_SAMPLING, *_LORAS, *_CACHE, *_SPEECH))
# (flags the command line gives, recorded flags it then takes none of).
_GROUPS = (
    (("ckpt_dir", "demo"), ("ckpt_dir", "demo")),
    ((*_LORAS, "lora_dir"), _LORAS),
    (("lora_dir",), _SAMPLING),
)
# Every flag a video may record.
RECORDED = frozenset(("task", "demo", "prompt", "negative_prompt", "base_seed", "image", "dtype",
                      "convert_model_dtype", "dit_fp8", *_TASK_BOUND))


def recorded_flags(config: GenerateConfig, seed: int) -> dict[str, object]:
    """The flags that make ``config``'s video again, as JSON values by flag name: ``seed`` the
    one the run used (drawn when ``config.base_seed`` is negative), the defaults resolved, paths
    absolute, LoRAs at the strength they merged at (a Lightning folder's as its files)."""
    guide_scale = config.sample_guide_scale
    flags: dict[str, object] = {
        "task": config.task,
        "demo": config.demo,
        "ckpt_dir": _absolute(config.ckpt_dir),
        "prompt": config.prompt,
        "negative_prompt": config.negative_prompt or None,  # empty: the task's own
        "base_seed": seed,
        "image": _absolute(config.image_path),
        "size": config.size,
        "sample_solver": config.sample_solver,
        "sample_steps": config.sample_steps,
        "sample_shift": config.sample_shift,
        # i2v-A14B's default is a scale per expert, which no flag gives: left to the default.
        "sample_guide_scale": None if isinstance(guide_scale, tuple) else guide_scale,
        "dtype": next(name for name, dtype in DTYPES.items() if dtype == config.dtype),
        # The several-GPU DiT shards compute in --dtype alone, as --convert_model_dtype does.
        "convert_model_dtype": config.convert_model_dtype or config.dit_fsdp,
        "dit_fp8": config.dit_fp8,
        **_lora_flags(config.loras),
        **config.cache.fields_on(),
    }
    if config.audio is None:
        flags["frame_num"] = config.frame_num
    else:  # s2v-14B's frames follow the speech
        flags.update(audio=_absolute(config.audio_path), num_clip=config.num_clip,
                     infer_frames=config.infer_frames, start_from_ref=config.start_from_ref,
                     pose_video=_absolute(config.pose_video))
    return flags


def _lora_flags(loras: Sequence[Lora]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {name: [] for name in _LORAS}
    for lora in loras:
        # repr: the strength exactly, so the weights merge as they did.
        flags["lora" if lora.expert is None else f"lora_{lora.expert}"].append(
            f"{Path(lora.path).absolute()}={float(lora.strength)!r}")
    return flags


def _absolute(path: Path | None) -> str | None:
    return None if path is None else str(path.absolute())


def take_video_settings(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        argv: Sequence[str] | None) -> argparse.Namespace:
    """``args`` (parsed by ``parser`` from ``argv``; None: ``sys.argv[1:]``) with each flag of
    ``args.settings_from``'s video that the command line leaves out set to the video's value, as
    the module's docstring tells; prints what it takes. Raises ``InvalidArguments`` for a video
    without readable settings."""
    path = Path(args.settings_from)
    label = f"--settings_from {path}"
    try:
        settings = read_mp4_settings(path, "--settings_from")
    except InputError as err:
        raise InvalidArguments([str(err)]) from None
    recorded = settings.get(FLAGS_KEY)
    if not isinstance(recorded, dict):
        raise InvalidArguments([f"{label} records no flags (it was made by {settings['software']}, which did "
                                "not store them); give its settings as flags"])
    actions = {action.dest: action for action in parser._actions}
    values, problems = {}, []
    for key, value in recorded.items():
        try:
            if key not in RECORDED:
                raise ValueError(f"{key!r} is not a flag a video records")
            values[key] = json_flag_value(key, value, actions[key])
        except (TypeError, ValueError) as err:
            problems.append(f"{label}: {err}")
    if problems:
        raise InvalidArguments(problems)
    given = given_flags(argv)
    kept = {key for key in values if key in given}
    for triggers, members in _GROUPS:
        if given.intersection(triggers):
            kept.update(key for key in members if key in values)
    for switch, own, other in (("teacache", _TEACACHE, _FBCACHE), ("fbcache", _FBCACHE, _TEACACHE)):
        if switch in given:  # one cache instead of the video's other, or --no-...: none of its settings
            kept.update(key for key in (other if getattr(args, switch) else own) if key in values)
    other_task = "task" in given and values.get("task") != args.task
    if other_task:
        kept.update(_TASK_BOUND.intersection(values))
    taken = {key: value for key, value in values.items() if key not in kept}
    vars(args).update(taken)
    if settings["software"] != f"wan_runtime {__version__}":
        warnings.warn(f"{path} was made by {settings['software']}, and this is wan_runtime {__version__}: "
                      "the same settings may not make the same video", stacklevel=2)
    notice = f"settings from {path}: {shlex.join(command_line(taken, actions))}"
    # What the command line changes: its own values, and the groups and task settings it replaces.
    changed = sorted(key for key in kept if getattr(args, key) != values[key])
    if changed:
        why = f", for another task than the video's {values.get('task')}" if other_task else ""
        notice += f"; the command line's own{why}: {', '.join(changed)}"
    print(notice, flush=True)
    return args


def given_flags(argv: Sequence[str] | None) -> set[str]:
    """The flags (by ``dest``) the command line ``argv`` gives, whatever their values."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def command_line(values: dict[str, object], actions: dict[str, argparse.Action]) -> list[str]:
    """The flags that give ``values`` (by ``dest``), left out where the value is the default."""
    words: list[str] = []
    for key, value in values.items():
        action = actions[key]
        flag = action.option_strings[0]
        if value is None or value == action.default:
            continue
        if action.nargs == 0:  # on; off is the default but where a --no- form says it
            words += [flag] if value else action.option_strings[1:]
        elif isinstance(value, list):
            for item in value:
                words += [flag, item]
        else:
            words += [flag, str(value)]
    return words
