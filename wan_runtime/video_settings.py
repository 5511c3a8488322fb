"""``--settings_from VIDEO``: make a video again, or a variation of it, from the settings stored
in a video ``python -m wan_runtime.generate`` wrote.

Each video stores, beside the account of its run, the flags that make it again (``FLAGS_KEY``,
written by ``recorded_flags``): every setting that decides its frames, resolved (the drawn seed,
the task's or the demo's defaults but the example prompt, which is each task's own), with paths
made absolute. What places the work (device, offloading, ``--t5_cpu``, ``--stream_blocks``,
``--compile``, ``--cuda_graphs``, the several-GPU flags) and where the video goes are not
recorded: the command line gives those. The same flags make the same frames where the work is
computed alike: on the same kind of device, with the same kernels, compiled or not, the text
encoder on the same device (``run_setup``, which the video's settings keep; ``check_setup``
warns of a difference).

``VideoSettings.fill`` gives each recorded flag that the command line (and a ``--batch`` line)
leaves out the video's value; a flag given keeps its own. Some flags stand for a group, so that
giving one replaces the video's whole group: the checkpoint (``--ckpt_dir``, ``--demo``; going
from the demo to a checkpoint or back also leaves out the video's size, frames, steps, dtype and
frames per clip, which are the demo's or the checkpoint's) and the LoRAs (a Wan2.2-Lightning
folder brings its own sampling, so a video's or a command line's folder takes the sampling along).
Switching one step cache on leaves the video's other cache out, and ``--no-teacache`` or
``--no-fbcache`` that cache; an empty ``--image``, ``--pose_video`` or LoRA flag leaves the
video's out. A command line naming another task takes none of what belongs to the video's task
(checkpoint, size, frames, sampling, LoRAs, step cache, speech inputs).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import wan_kernels
from wan_runtime import __version__
from wan_runtime.cache.config import CACHE_FIELDS, CacheConfig
from wan_runtime.cli_args import EXAMPLE_PROMPT, GenerateConfig, InvalidArguments, absolute_lora, split_lora
from wan_runtime.cli_parser import DTYPES, LORA_FLAGS, json_flag_value
from wan_runtime.errors import InputError
from wan_runtime.input_digests import INPUTS_KEY, changed_files
from wan_runtime.video_io import read_mp4_settings

# The key of a video's settings that holds the flags which make it again.
FLAGS_KEY = "flags"
SOFTWARE = f"wan_runtime {__version__}"

_CACHE = tuple(CacheConfig().as_dict())
_LORAS = ("lora_dir", *LORA_FLAGS)
_SAMPLING = ("sample_steps", "sample_shift", "sample_guide_scale", "sample_solver")
_SPEECH = ("audio", "num_clip", "infer_frames", "start_from_ref", "pose_video")
_CHECKPOINT = ("ckpt_dir", "demo")
# The demo's defaults, not a checkpoint's (nor the reverse).
_SCALED = ("size", "frame_num", "sample_steps", "dtype", "infer_frames")
# What a video's task decides, not taken for another task.
_TASK_BOUND = frozenset(("ckpt_dir", "size", "frame_num", *_SAMPLING, *_LORAS, *_CACHE, *_SPEECH))
# Flags whose empty value leaves the video's out.
_CLEARABLE = ("image", "pose_video", *_LORAS)
_PATHS = ("ckpt_dir", "image", "audio", "pose_video")
# Every flag a video may record.
RECORDED = frozenset(("task", "demo", "prompt", "negative_prompt", "base_seed", "image", "dtype",
                      "convert_model_dtype", "dit_fp8", "vae_tiling", *_TASK_BOUND))


def _one_scale(guide_scale: float | tuple[float, float]) -> float | None:
    """The one number ``--sample_guide_scale`` gives for ``guide_scale``, if there is one."""
    if not isinstance(guide_scale, tuple):
        return guide_scale
    low, high = guide_scale
    return low if low == high else None


def recorded_flags(config: GenerateConfig, seed: int) -> dict[str, object]:
    """The flags that make ``config``'s video again, as JSON values by flag name: ``seed`` the
    one the run used (drawn when ``config.base_seed`` is negative), the defaults resolved, paths
    absolute, the LoRA flags as given."""
    guide_scale = config.sample_guide_scale
    flags: dict[str, object] = {
        "task": config.task,
        "demo": config.demo,
        "ckpt_dir": _absolute(config.ckpt_dir),
        # The task's own example prompt and negative prompt stay the task's, for another task.
        "prompt": None if config.prompt == EXAMPLE_PROMPT[config.task] else config.prompt,
        "negative_prompt": config.negative_prompt or None,
        "base_seed": seed,
        "image": _absolute(config.image_path),
        "size": config.size,
        "sample_solver": config.sample_solver,
        "sample_steps": config.sample_steps,
        "sample_shift": config.sample_shift,
        # i2v-A14B's is a scale per expert, which the flag gives where the two are one (its default):
        # a pair of two would be left to the default.
        "sample_guide_scale": _one_scale(guide_scale),
        "dtype": next(name for name, dtype in DTYPES.items() if dtype == config.dtype),
        # The several-GPU DiT shards compute in --dtype alone, as --convert_model_dtype does.
        "convert_model_dtype": config.convert_model_dtype or config.dit_fsdp,
        "dit_fp8": config.dit_fp8,
        "vae_tiling": config.vae_tiling,
        "lora_dir": next((value for dest, value in config.lora_flags if dest == "lora_dir"), None),
        **{dest: [value for given, value in config.lora_flags if given == dest] for dest in LORA_FLAGS},
        **config.cache.fields_on(),
    }
    if config.audio is None:
        flags["frame_num"] = config.frame_num
    else:  # s2v-14B's frames follow the speech
        flags.update(audio=_absolute(config.audio_path), num_clip=config.num_clip,
                     infer_frames=config.infer_frames, start_from_ref=config.start_from_ref,
                     pose_video=_absolute(config.pose_video))
    return flags


def settings_differ(path: Path, config: GenerateConfig) -> str | None:
    """How the video at ``path`` was made otherwise than ``config`` would make it, in words (the
    flags that differ, with both values; a seed ``config`` would draw matches any), or None if
    the same; a file without our settings, or that is no video, says so."""
    try:
        then = read_mp4_settings(path, "the file").get(FLAGS_KEY)
    except InputError as err:  # not ours, or not a video ffmpeg reads: its first clause says which
        return str(err).split("; ")[0]
    if not isinstance(then, dict):
        return "it records no flags"
    # Through JSON, as stored: tuples are lists there.
    now = json.loads(json.dumps(recorded_flags(config, config.base_seed)))
    if config.base_seed < 0:
        now["base_seed"] = then.get("base_seed")
    differ = [key for key in sorted(then.keys() | now.keys()) if then.get(key) != now.get(key)]
    if not differ:
        return None
    return "it was made with " + ", ".join(f"{key} {json.dumps(then.get(key))} (this run: "
                                            f"{json.dumps(now.get(key))})" for key in differ)


def run_setup(config: GenerateConfig) -> dict[str, object]:
    """How a video's numbers were computed, which its flags leave to the command line: the device,
    the ``wan_kernels`` backend its ops ran on, whether the DiT blocks were compiled and whether
    the text encoder ran on the CPU."""
    return {"device": config.device, "kernels": wan_kernels.backend_for(config.device),
            "compile": config.compile, "t5_cpu": config.t5_cpu}


def _absolute(path: Path | None) -> str | None:
    return None if path is None else str(path.absolute())


@dataclass(frozen=True)
class VideoSettings:
    """The settings stored in the video ``path`` (``stored``), its recorded flags as the command
    line converts them (``values``), the flags the command line gives (``given``, by dest) and
    the parser's actions by dest."""

    path: Path
    stored: dict[str, object]
    values: dict[str, object]
    given: frozenset[str]
    actions: dict[str, argparse.Action]

    @classmethod
    def read(cls, parser: argparse.ArgumentParser, video: str, argv: Sequence[str] | None) -> VideoSettings:
        """The settings of the video file ``video`` for the command line ``argv`` (None:
        ``sys.argv[1:]``), which ``parser`` parses. Raises ``InvalidArguments`` for a video
        without usable flags, each problem named; warns of a video of another version."""
        if not video:
            raise InvalidArguments(["--settings_from is empty; give an MP4 written by python -m "
                                    "wan_runtime.generate"])
        path = Path(video)
        label = f"--settings_from {path}"
        try:
            stored = read_mp4_settings(path, "--settings_from")
        except InputError as err:
            raise InvalidArguments([str(err)]) from None
        software = str(stored["software"])
        other_version = software != SOFTWARE
        if other_version:
            warnings.warn(f"{path} was made by {software}, and this is {SOFTWARE}: the same settings may not "
                          "make the same video", stacklevel=2)
        recorded = stored.get(FLAGS_KEY)
        if recorded is None:
            raise InvalidArguments([f"{label} records no flags (it was made by an earlier wan_runtime, which "
                                    "did not store them); give its settings as flags"])
        if not isinstance(recorded, dict) or not isinstance(recorded.get("task"), str):
            raise InvalidArguments([f"{label}: its flags are not an object of flags with the task's; give "
                                    "its settings as flags"])
        actions = {action.dest: action for action in parser._actions}
        values, problems = {}, []
        for key, value in recorded.items():
            try:
                if key not in RECORDED:
                    newer = f" (by {software}; use that version)" if other_version else ""
                    raise ValueError(f"{key!r} is not a flag this version takes from a video{newer}")
                values[key] = json_flag_value(key, value, actions[key])
            except (TypeError, ValueError) as err:
                problems.append(f"{label}: {err}")
        if problems:
            raise InvalidArguments(problems)
        return cls(path, stored, values, frozenset(given_flags(parser, argv)), actions)

    def fill(self, args: argparse.Namespace, line: Iterable[str] = ()) -> tuple[argparse.Namespace, dict]:
        """A copy of ``args`` with the video's value of each flag that neither the command line
        nor ``line`` (the flags a ``--batch`` line sets) gives, but for the groups the module's
        docstring tells; and the values taken, by dest."""
        given = self.given | set(line)
        filled = copy.copy(args)
        for key in given.intersection(_CLEARABLE):
            value = getattr(filled, key)
            cleared = [item for item in value if item] if isinstance(value, list) else value or None
            setattr(filled, key, cleared)
        taken = {key: value for key, value in self.values.items() if key not in self._left_out(filled, given)}
        vars(filled).update(taken)
        return filled, taken

    def _left_out(self, args: argparse.Namespace, given: set[str]) -> set[str]:
        """The recorded flags ``args`` keeps its own values of: those ``given`` and the groups
        they replace."""
        left = set(given)
        if given.intersection(_CHECKPOINT):
            left.update(_CHECKPOINT)
            if bool(args.demo) != bool(self.values.get("demo")):
                left.update(_SCALED)
        if given.intersection(_LORAS):
            left.update(_LORAS)
        # A Lightning folder's sampling comes and goes with it.
        if args.lora_dir or ("lora_dir" in left and self.values.get("lora_dir")):
            left.update(_SAMPLING)
        for switch, other in (("teacache", "fbcache"), ("fbcache", "teacache")):
            if switch not in given:
                continue
            if not getattr(args, switch):  # --no-...: none of that cache's settings
                left.update(CACHE_FIELDS[switch])
            elif not self.values.get(switch):  # this cache instead of the video's other
                left.update(CACHE_FIELDS[other])
        if "task" in given and args.task != self.values["task"]:
            left.update(_TASK_BOUND)
        return left

    def notice(self, args: argparse.Namespace, taken: dict[str, object]) -> str:
        """What the command line ``args`` (filled, taking ``taken``) made of the video's flags: the
        flags taken, as a command line, those it gives otherwise, and those it leaves out with
        the group of one it gives."""
        text = f"settings from {self.path}: {shlex.join(command_line(taken, self.actions))}"
        differ = [key for key in sorted(self.values)
                  if key not in taken and _differ(key, getattr(args, key), self.values[key])]
        own = [key for key in differ if key in self.given]
        left = [key for key in differ if key not in self.given]
        if own:
            text += f"; the command line's own: {', '.join(own)}"
        if left:
            text += f"; left out with the settings the command line replaces: {', '.join(left)}"
        return text

    def source_of(self, problems: list[str], taken: dict[str, object]) -> list[str]:
        """``problems`` with those about a value ``taken`` from the video saying so: those naming
        its flag, its file (a LoRA's without the strength) or, quoted, its value."""
        marks = [f"--{key}" for key in taken]
        for key, value in taken.items():
            for item in map(str, value if isinstance(value, list) else [value]):
                if key in _LORAS:
                    marks += [item, split_lora(item)[0]]
                elif key in _PATHS:
                    marks.append(item)
                elif key not in ("prompt", "negative_prompt"):
                    marks.append(repr(item))
        # Whole words only: a path of the command line's may start with a recorded folder's.
        found = re.compile("|".join(rf"(?<![^\s'\"(]){re.escape(mark)}(?![^\s'\";:,)])"
                                    for mark in marks if mark not in ("", "None")))
        hint = f" (recorded in --settings_from {self.path}; give the flag to replace it)"
        return [problem + hint if marks and found.search(problem) else problem for problem in problems]

    def keep_text_encoder(self, config: GenerateConfig) -> GenerateConfig:
        """``config`` with the text encoder where the video's ran, for ``--fit_memory`` to keep
        (unless the command line placed it), when the video was made for the same task on the
        same kind of device: elsewhere the encoder would encode the prompt otherwise in its last
        bits. Any other ``config`` as it is, and one whose text encoder FSDP shards over the GPUs
        (``check_setup`` warns when the video's ran elsewhere)."""
        fit, stored = config.fit_memory, self.stored.get("t5_cpu")
        same_run = (_device_kind(self.stored.get("device")) == _device_kind(config.device)
                    and self.stored.get("task") == config.task)
        placed = fit is None or "t5_cpu" in fit.given or config.t5_fsdp
        if placed or not isinstance(stored, bool) or not same_run:
            return config
        return replace(config, t5_cpu=stored, fit_memory=fit._replace(given=(*fit.given, "t5_cpu")))

    def check_inputs(self, config: GenerateConfig) -> None:
        """Warn when a file ``config`` reads at a path the video recorded holds something else now
        (``wan_runtime.input_digests``): the same flags then make another video."""
        changed = changed_files(self.stored.get(INPUTS_KEY), config)
        if changed:
            files = ", ".join(map(str, changed))
            whose = "its" if len(changed) == 1 else "their"
            warnings.warn(f"{files} changed since {self.path} was made ({whose} contents differ from those "
                          "recorded): the video will differ", stacklevel=2)

    def check_setup(self, config: GenerateConfig) -> None:
        """Warn when ``config`` computes otherwise than the video did (``run_setup``): on another
        kind of device, with other kernels, compiled or not, the text encoder elsewhere; the same
        flags then make a video that differs in its last bits."""
        now = run_setup(config)
        then = {key: self.stored.get(key) for key in now}
        then["device"], now["device"] = (_device_kind(device) for device in (then["device"], now["device"]))
        changed = [key for key in now if then[key] is not None and then[key] != now[key]]
        if changed:
            made = ", ".join(f"{key} {then[key]}" for key in changed)
            this = ", ".join(f"{key} {now[key]}" for key in changed)
            warnings.warn(f"{self.path} was made with {made}, this run computes with {this}: the video will "
                          "differ in its last bits", stacklevel=2)


def _device_kind(device: object) -> str | None:
    """``cuda`` of ``cuda:1``; None for no device."""
    return None if device is None else str(device).split(":")[0]


def _differ(key: str, mine: object, recorded: object) -> bool:
    """Whether the command line's value of ``key`` is not the recorded one (paths compared
    absolute)."""
    if key in _PATHS and mine is not None and recorded is not None:
        return Path(str(mine)).absolute() != Path(str(recorded))
    if key in _LORAS and mine:
        mine = [absolute_lora(item) for item in mine] if isinstance(mine, list) else absolute_lora(str(mine))
    return mine != recorded


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The flags (by ``dest``) the command line ``argv`` gives to ``parser``, whatever their
    values."""
    parser = copy.deepcopy(parser)
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
        else:
            for item in map(str, value if isinstance(value, list) else [value]):
                # A value starting with a dash would read as a flag of its own.
                words += [f"{flag}={item}"] if item.startswith("-") else [flag, item]
    return words
