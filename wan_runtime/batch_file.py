"""``--batch FILE`` of ``python -m wan_runtime.generate``: several videos from one load of the models.

The file holds one JSON object per line (JSON Lines; blank lines and lines starting with ``#``
are skipped), one video each. Its keys are the per-video flags without their dashes (``prompt``,
``image``, ``base_seed``, ``save_file``, the sampling and step cache settings, ...); what a line
leaves out comes from the command line (and its ``--settings_from`` video), and ``null`` stands
for the flag's default; a line turning a step cache off (``"teacache": false``) drops the
command line's settings of that cache. What the loaded models depend on (task, checkpoint,
device, dtype, LoRAs, offloading, compiling, parallelism) is the command line's (or its video's)
for every line. Each line is checked as a command line of its own before any model loads, and
every problem of every line is listed at once.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from wan_runtime.cache.config import CACHE_FIELDS, CacheConfig
from wan_runtime.cli_args import DecodedInputs, GenerateConfig, InvalidArguments, resolve
from wan_runtime.cli_parser import did_you_mean, json_flag_value
from wan_runtime.distributed.launch import Launch
from wan_runtime.errors import InputError
from wan_runtime.input_files import file_problem

if TYPE_CHECKING:
    from wan_runtime.video_settings import VideoSettings

# The flags a batch line may set: what one video is made from, not what the models are.
PER_VIDEO = (
    "prompt", "negative_prompt", "image", "base_seed", "save_file", "size", "frame_num", "sample_steps",
    "sample_shift", "sample_guide_scale", "sample_solver", "audio", "num_clip", "infer_frames",
    "pose_video", "start_from_ref", "vae_tiling", *CacheConfig().as_dict(),
)
COMMENT = "#"
# The flags a line gives an input file, and all it gives a path: no shell made their "~" the home folder.
INPUTS = ("image", "audio", "pose_video")
PATHS = (*INPUTS, "save_file")


def resolve_jobs(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 video: VideoSettings | None = None) -> list[GenerateConfig]:
    """The videos ``args`` asks for: ``resolve(args)`` alone without ``--batch``, else one per line
    of the batch file, each ``batch_line`` numbered as the file's line; with the flags of
    ``video`` (``--settings_from``) that neither the command line nor a line gives. Raises
    ``InvalidArguments`` listing every problem: a problem every line has once, the others with
    their line number."""
    if args.batch is None:
        return [_resolve(args, video)]
    command_line = []
    if args.save_file is not None:
        command_line.append("--save_file names one video, and --batch makes several: give each line its own "
                            "save_file (a line without one gets the default name, with its line number)")
        args = argparse.Namespace(**{**vars(args), "save_file": None})
    try:
        lines, unread = read_batch(Path(args.batch), parser)
    except InvalidArguments as err:
        raise InvalidArguments(command_line + err.problems) from None
    jobs: list[GenerateConfig] = []
    problems: dict[int, list[str]] = {}
    own: dict[int, list[str]] = {}
    raised: dict[int, list[warnings.WarningMessage]] = {}
    inputs = DecodedInputs()
    for number, values in lines:
        line_args = copy.copy(args)
        vars(line_args).update(values)
        for switch, names in CACHE_FIELDS.items():
            if switch in values and not values[switch]:  # and the command line's settings of that cache
                vars(line_args).update({name: None for name in names[1:] if name not in values})
        with warnings.catch_warnings(record=True) as raised[number]:
            # Every line's notices, though they come from one place; other kinds as filtered.
            warnings.simplefilter("always", UserWarning)
            try:
                jobs.append(replace(_resolve(line_args, video, values, inputs), batch_line=number))
            except InvalidArguments as err:
                problems[number], own[number] = (_beside(told, values, Path(args.batch).parent)
                                                 for told in (err.problems, err.own))
    _warn_by_line(raised, len(lines))
    # Those of the lines that did not read among the others, in the order of the file's lines.
    bare = _own_problems(args, video, inputs) if problems else set()
    told = [*command_line, *_by_line({**problems, **unread}, len(lines), bare=bare),
            *_shared_save_files({number: values.get("save_file") for number, values in lines})]
    if told:
        raise InvalidArguments(told, _by_line(own, len(lines), bare=bare))
    return jobs


def _resolve(args: argparse.Namespace, video: VideoSettings | None, line: Iterable[str] = (),
             inputs: DecodedInputs | None = None) -> GenerateConfig:
    """``resolve(args)``, with ``video``'s flags for what neither the command line nor ``line``
    (the flags a batch line sets) gives, and its problems about those flags saying so."""
    if video is None:
        return resolve(args, inputs, line)
    filled, taken = video.fill(args, line)
    try:
        config = resolve(filled, inputs, line)
    except InvalidArguments as err:
        problems, own = (video.source_of(told, taken) for told in (err.problems, err.own))
        raise InvalidArguments(problems, own) from None
    config = video.keep_text_encoder(config)
    video.check_setup(config)
    if config.launch.main:  # the others' warnings go untold: no need to read the files
        video.check_inputs(config)
    return config


def _beside(problems: list[str], values: dict[str, object], folder: Path) -> list[str]:
    """``problems`` with a hint where a line's input file, missing from the current folder, is
    in the batch file's ``folder``."""
    for key in INPUTS:
        given = values.get(key)
        if not given or Path(str(given)).is_absolute() or not (folder / str(given)).exists():
            continue
        missing = f" {Path(str(given))} does not exist"  # as the problem writes it
        hint = (f" (a batch file's paths are taken from the current folder; {folder / str(given)} is beside "
                "the batch file)")
        problems = [problem + hint if missing in problem else problem for problem in problems]
    return problems


def _own_problems(args: argparse.Namespace, video: VideoSettings | None, inputs: DecodedInputs) -> set[str]:
    """The problems of the command line alone (its warnings, which the lines repeat, not told)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _resolve(args, video, (), inputs)
        except InvalidArguments as err:
            return set(err.problems)
    return set()


def _warn_by_line(raised: dict[int, list[warnings.WarningMessage]], line_count: int) -> None:
    """Each warning the lines raised once, as ``_by_line`` tells problems, in its own category."""
    categories = dict.fromkeys(warning.category for line in raised.values() for warning in line)
    for category in categories:
        told = {number: [str(w.message) for w in line if w.category is category]
                for number, line in raised.items()}
        for message in _by_line(told, line_count):
            warnings.warn(message, category, stacklevel=3)


def read_batch(path: Path, parser: argparse.ArgumentParser) -> tuple[list[tuple[int, dict[str, object]]],
                                                                     dict[int, list[str]]]:
    """The lines of the batch file at ``path`` that read: (line number, the flags it sets, as
    ``parser``'s types make them); and by line number the problems of those that do not, so that
    the lines that read are checked too and every problem is told at once. Raises
    ``InvalidArguments`` when the file cannot be read or holds no video line."""
    problem = file_problem(path, read_once=True)  # as a shell's <(...) gives it
    if problem is None and path.is_fifo() and _distributed():
        problem = "is a pipe, and under torchrun every process reads the batch file: save it to a file"
    if problem is not None:
        raise InvalidArguments([f"--batch {path} {problem}; give a JSON Lines file, one video per line"])
    try:
        # utf-8-sig: a byte order mark, as Windows editors write, is not part of line 1.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidArguments([f"cannot read --batch {path}: {err}; give a UTF-8 JSON Lines file"]) from None
    actions = {action.dest: action for action in parser._actions}
    lines, problems = [], {}
    # Lines end at newlines alone: JSON strings may hold the other characters splitlines() splits at.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith(COMMENT):
            continue
        try:
            values, line_problems = _line_values(_parsed(line), actions)
        except json.JSONDecodeError as err:
            line_problems = [f"it is not JSON ({err.msg} at column {err.colno}); {_ONE_OBJECT}"]
        except _Unreadable as err:
            line_problems = [f"it holds {err}, which no flag takes; {_ONE_OBJECT}"]
        except TypeError as err:
            line_problems = [str(err)]
        if line_problems:
            problems[number] = line_problems
        else:
            lines.append((number, values))
    if not lines and not problems:
        raise InvalidArguments([f"--batch {path} holds no video; write one JSON object per line, e.g. "
                                '{"prompt": "a red boat on a river", "base_seed": 1}'])
    return lines, problems


def _distributed() -> bool:
    """Whether this process is one of a torchrun launch (a launch described wrong, which the
    checks of the command line tell, counts as none)."""
    try:
        return Launch.from_env().distributed
    except InputError:
        return False


_ONE_OBJECT = 'write one flat JSON object per line, e.g. {"prompt": "a red boat", "base_seed": 1}'


class _Unreadable(Exception):
    """JSON that Python reads no further: a number of thousands of digits, nesting past the stack."""


def _parsed(line: str) -> object:
    try:
        return json.loads(line, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError:
        raise
    except ValueError:  # what json says of a number past Python's limit of digits
        raise _Unreadable("a number of thousands of digits") from None
    except RecursionError:
        raise _Unreadable("nesting deeper than Python reads") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object's keys, refusing one given twice (JSON would keep the last without a word)."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise TypeError(f"{', '.join(twice)} given twice")
    return dict(pairs)


def _line_values(line: object, actions: dict[str, argparse.Action]) -> tuple[dict[str, object], list[str]]:
    """The flags a line's JSON sets, converted as the command line would convert them, and the
    problem of each that cannot be."""
    if not isinstance(line, dict):
        raise TypeError(f"a line must be a JSON object of flags, e.g. {{\"prompt\": \"...\"}}, got "
                        f"{type(line).__name__}")
    values, problems = {}, []
    every = f"; a line sets {', '.join(PER_VIDEO)}"
    for key, value in line.items():
        if key in actions and key not in PER_VIDEO:
            problems.append(f"{key!r} cannot be set per video (given on the command line, the same for every "
                            f"video){every}")
            continue
        if key not in PER_VIDEO:
            problems.append(f"{key!r} is not a flag{did_you_mean(repr(key), map(repr, PER_VIDEO)) or every}")
            continue
        try:
            values[key] = json_flag_value(key, value, actions[key])
        except (TypeError, ValueError) as err:
            problems.append(str(err))
            continue
        if key in PATHS and isinstance(values[key], str):
            values[key] = os.path.expanduser(values[key])
    return values, problems


def _by_line(problems: dict[int, list[str]], line_count: int, bare: set[str] | None = None) -> list[str]:
    """Each problem once: bare when every line of several has it and it is among ``bare`` (the
    command line's own; None: any), the others after the numbers of their lines, in the order of
    their first line."""
    lines_of: dict[str, list[int]] = {}
    for number, line_problems in sorted(problems.items()):
        for problem in dict.fromkeys(line_problems):
            lines_of.setdefault(problem, []).append(number)
    every = [problem for problem, numbers in lines_of.items()
             if (bare is None or problem in bare) and len(numbers) == line_count > 1]
    return every + [f"--batch {line_numbers(numbers)}: {problem}"
                    for problem, numbers in lines_of.items() if problem not in every]


def line_numbers(numbers: list[int]) -> str:
    """``line 3``, ``lines 3, 5`` or, for three or more in a row, ``lines 1-40, 42``: a problem of
    a long file's every line is told in a line of its own."""
    runs: list[list[int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    told = [f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs]
    return f"line{'s' * (len(numbers) > 1)} {', '.join(told)}"


def _shared_save_files(save_files: dict[int, object]) -> list[str]:
    """Lines that would write the same file: the later video would replace the earlier. By each
    line's ``save_file`` as read, so that lines with other problems are compared too."""
    lines_of: dict[Path, list[int]] = {}
    for number, save_file in save_files.items():
        if save_file:
            lines_of.setdefault(Path(str(save_file)).resolve(), []).append(number)
    return [f"--batch {line_numbers(numbers)} all write {path}; give each line its own save_file (or "
            "leave it out for the default name)"
            for path, numbers in lines_of.items() if len(numbers) > 1]
