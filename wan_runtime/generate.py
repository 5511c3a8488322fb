"""``python -m wan_runtime.generate``: parse and validate, run a pipeline, write the MP4.

Exit codes: 0 success, 2 bad input (every problem on its own line, before any model loads),
1 failure at run time, 130 interrupted. No traceback is shown unless ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NoReturn

import torch

from wan_runtime import demo
from wan_runtime.audio_io import heard_frames
from wan_runtime.batch_file import line_numbers, resolve_jobs
from wan_runtime.checks import PLACEMENT_FLAGS
from wan_runtime.cli_args import GenerateConfig, InvalidArguments, resolved_offload
from wan_runtime.cli_parser import build_parser
from wan_runtime.distributed.launch import Launch, from_rank0
from wan_runtime.errors import CheckpointError, InputError, LaunchInputError, NumericalError
from wan_runtime.stop_signals import handle_stops
from wan_runtime.tasks import TASKS
from wan_runtime.video_output import default_save_file, made_with, write_video
from wan_runtime.video_settings import VideoSettings, settings_differ

if TYPE_CHECKING:
    from wan_runtime.pipelines import MemoryEstimate, MemoryFit, Pipeline, VideoShape
    from wan_runtime.pipelines.memory_plan import WeightPlan


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Under ``torchrun`` every process runs it; rank 0 alone prints what a run reports and writes
    the video, and the other processes say only what went wrong in them.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        if not args.debug:  # a notice for the user reads as one line, not a source location
            warnings.showwarning = _warning_line
        if not _launch().main:
            warnings.simplefilter("ignore")
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        try:
            code = _run(parser, args, argv)
        except Exception:  # raised by --debug
            if not _launch().distributed:
                raise
            # Printed here rather than raised: the traceback's frames go, and with them the groups.
            print(f"rank {_launch().rank}:", file=sys.stderr)
            traceback.print_exc()
            code = 1
    if _launch().distributed:
        # A failure's traceback held the pipeline, and through its sharded DiT the process groups
        # that Launch.abandon left: freed now, while the interpreter is whole (leave_process_group).
        gc.collect()
    return code


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    try:
        video = None
        if args.settings_from is not None:
            video = VideoSettings.read(parser, args.settings_from, argv)
            filled, taken = video.fill(args)
            print(video.notice(filled, taken), flush=True)
        # The lines of a batch fill in from the command line as given, each its own way.
        jobs = resolve_jobs(parser, args, video)
        args = args if video is None else filled
        return _generate(jobs, args)
    except _BatchStopped:
        return 1
    except InvalidArguments as err:
        # One process per machine tells what every process there finds; another what concerns it alone.
        for problem in err.problems if _launch().speaks_for_machine else err.own:
            _error(problem)
        return 2
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        # A batch tells what it had made (rank 0, which alone writes, knows); stopped before its
        # videos, it made none.
        unwritten = "no video was written"
        if isinstance(err, _BatchInterrupted):
            unwritten = err.unwritten if _launch().main else "rank 0 tells what the batch wrote"
        if _launch().distributed:  # torchrun stops every process when one fails: one per machine tells
            if _launch().speaks_for_machine:
                _error(f"stopped; {unwritten} (if another process failed, its error is above)")
        else:
            _error(f"interrupted; {unwritten}")
        return 130
    except (InputError, CheckpointError) as err:
        # Found only while loading or running: still a problem with what the user gave.
        if args.debug:
            raise
        if _launch().main or not isinstance(err, LaunchInputError):
            _error(_one_line(str(err)))
        return 2
    except torch.OutOfMemoryError as err:
        if args.debug:
            raise
        # torch's first two sentences say what and how much; the rest is allocator advice.
        what = ". ".join(_one_line(str(err)).split(". ")[:2])
        stage = getattr(err, "stage_name", None)
        where = "" if stage is None else f" in the {stage} stage"
        remedy = _memory_remedy(args, getattr(err, "video", None), getattr(err, "stage", None),
                                getattr(err, "most_streamed", None))
        _error(f"out of memory{where}: {what}; {remedy}")
        return 1
    except Exception as err:
        if args.debug:
            raise
        if _launch().distributed and _lost_peers(err):
            what = f"{type(err).__name__}: {_one_line(str(err))[:120]}"
            _error(f"stopped: lost touch with another process of the launch ({what}); {_unwritten(args)} (if "
                   "another process failed, its error is above)")
            return 1
        if args.compile and type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
            # A compiler report runs to pages; its first line names the failure.
            first = _one_line(next(iter(str(err).strip().splitlines()), ""))
            _error(f"torch.compile failed: {type(err).__name__}: {first}; run without --compile "
                   "(or with --debug for the traceback)")
            return 1
        _error(f"{type(err).__name__}: {_one_line(str(err))} (run with --debug for the traceback)")
        return 1


_PEER_GONE = ("gloo/transport", "Connection closed by peer", "Connection reset by peer")


def _unwritten(args: argparse.Namespace) -> str:
    # A batch's finished videos are written; the one being made never is.
    return "no video was written" if args.batch is None else "the video in progress was not written"


def _lost_peers(err: Exception) -> bool:
    """Whether ``err`` is a collective's failure because another process left the launch (which
    a process that failed does, at once: ``Launch.abandon``)."""
    # gloo raises a plain RuntimeError from its transport.
    return isinstance(err, torch.distributed.DistError) or any(words in str(err) for words in _PEER_GONE)


def cli() -> None:
    """Entry point: ``main`` with SIGTERM handled like Ctrl-C, so partial output is removed, and a
    process that cannot take either signal (blocked in a rendezvous or collective) ended."""
    handle_stops(_error_prefix())
    sys.exit(main())


def _existing(jobs: list[GenerateConfig]) -> list[bool]:
    """``--skip_existing``: whether each video's file exists (a default name, which holds the time
    of writing, never does), as rank 0 sees it, so that every process makes the same videos."""
    unnamed = [job for job in jobs if job.save_file is None]
    if unnamed:
        which = "the video" if unnamed[0].batch_line is None else (
            f"--batch {line_numbers([job.batch_line for job in unnamed])}")
        warnings.warn(f"--skip_existing cannot skip {which} without a save_file: a default name holds the "
                      "time of writing, so no such file exists yet", stacklevel=2)
    exists = from_rank0([job.save_file is not None and job.save_file.exists() for job in jobs])
    kept = [job for job, skipped in zip(jobs, exists, strict=True) if skipped]
    # An edited line's video, or a file of another run: read by rank 0, an ffmpeg each, side by side.
    read = kept if jobs[0].launch.main else []
    with ThreadPoolExecutor(max_workers=8) as pool:
        others = list(pool.map(lambda job: settings_differ(job.save_file, job), read))
    for job, other in itertools.zip_longest(kept, others):
        where = "" if job.batch_line is None else f"--batch line {job.batch_line}: "
        print(f"{where}{job.save_file} exists; skipped (--skip_existing)")
        if other is not None:
            warnings.warn(f"{where}{job.save_file} was kept, but {other}; remove it to make this video",
                          stacklevel=2)
    return exists


def _generate(jobs: list[GenerateConfig], args: argparse.Namespace) -> int:
    """Make (or with ``--dry_run`` check) the videos of ``jobs``, which share every setting of the
    models; the exit code: 1 if a video of a batch failed (the others are made), else 0."""
    launch = jobs[0].launch
    dry_run, batch = jobs[0].dry_run, jobs[0].batch_line is not None
    launch.start(torch.device(jobs[0].device))
    failed: list[int] = []
    last = None
    try:
        if args.verify_checkpoint:
            _verify(jobs[0])
        exists = _existing(jobs) if args.skip_existing else [False] * len(jobs)
        todo = [job for job, skipped in zip(jobs, exists, strict=True) if not skipped]
        if dry_run:  # every check, the skipped videos' too
            sizes, jobs, weights, estimates = _check_run(jobs, exists)
        elif todo:
            failed, last = _make_videos(todo, args)
    except BaseException:
        launch.abandon()
        raise
    # Every process made the same videos; rank 0 writes the last once the others are done, so that
    # none waits in a collective through the write (a batch's others it writes between videos).
    launch.stop()
    if not launch.main:
        return 1 if failed else 0
    if dry_run:
        _print_plan([(job, size) for job, size, skip in zip(jobs, sizes, exists, strict=True) if not skip],
                    weights, estimates)
    elif last is not None and not batch:
        try:
            write_video(*last)
        except OSError as err:  # a full disk, a folder gone: the user's to mend, not a crash
            if args.debug:
                raise
            _error(f"{_one_line(str(err))}; the video was made but not written: mend that and run again")
            return 1
    elif last is not None:
        try:
            if not _written(*last, args, going_on=False):
                failed.append(last[0].batch_line)
        except KeyboardInterrupt as err:
            raise _BatchInterrupted(_interrupted_batch(todo, len(todo), failed)) from err
    if not todo:
        print("nothing to make: every video's file exists (--skip_existing)")
    elif batch and not dry_run:
        skipped = [job.batch_line for job, skip in zip(jobs, exists, strict=True) if skip]
        print(f"batch: {_tally(todo, len(todo), failed, skipped=skipped)}")
    if jobs[0].demo and todo and not dry_run:  # once more under the videos' accounts
        print(demo.NOTICE)
    return 1 if failed else 0


def _verify(config: GenerateConfig) -> None:
    """``--verify_checkpoint``: each file of the release hashed and compared with its download's
    record, told as it is done (``CheckpointError`` for one that differs)."""
    from wan_runtime.checkpoint_verify import verify_checkpoint

    print(f"verify: hashing the files {config.task} reads from {config.ckpt_dir}", flush=True)
    result = verify_checkpoint(config.task, config.ckpt_dir, progress=lambda file, done, total: print(
        f"verify: [{done}/{total}] {file.describe()}", flush=True))
    print(f"verify: {result.describe()}", flush=True)


def _load_arguments(config: GenerateConfig) -> dict[str, object]:
    """``load_pipeline``'s arguments for this command line (the demo's checkpoint written first)."""
    ckpt_dir = config.ckpt_dir
    if config.demo:
        print(demo.NOTICE, flush=True)
        ckpt_dir, written = demo.demo_checkpoint(config.task)
        print(f"demo: {'wrote' if written else 'using cached'} checkpoint {ckpt_dir}", flush=True)
    return {
        "task": config.task, "ckpt_dir": ckpt_dir, "device": config.device, "dtype": config.dtype,
        "offload_model": config.offload_model, "t5_cpu": config.t5_cpu,
        "convert_model_dtype": config.convert_model_dtype, "compile": config.compile,
        "ulysses_size": config.ulysses_size, "dit_fsdp": config.dit_fsdp, "t5_fsdp": config.t5_fsdp,
        "loras": config.loras, "stream_blocks": config.stream_blocks, "dit_fp8": config.dit_fp8,
        "cuda_graphs": config.cuda_graphs,
    }


def _lora_changes(pipeline: Pipeline) -> str:
    """The parameters (weights, biases) the LoRAs changed in each DiT of ``pipeline``, in words."""
    told = [f"{dit.lora_changes} parameter{'s' * (dit.lora_changes != 1)} of the "
            f"{'' if len(pipeline.dits) == 1 else name + ' '}DiT" for name, dit in pipeline.dits.items()]
    return " and ".join(told) + " changed"


def _output_sizes(jobs: list[GenerateConfig]) -> list[tuple[int, int]]:
    """Each video's width and height; an image too extreme for its size is refused now, before
    minutes of loading, with every such line of a batch named."""
    # Imported only now: bad input is refused without importing the models.
    from wan_runtime.pipelines import check_output_size

    sizes, problems = [], []
    for job in jobs:
        try:
            sizes.append(check_output_size(job.task, job.image, job.size))
        except InputError as err:
            problems.append(str(err) if job.batch_line is None else f"--batch line {job.batch_line}: {err}")
    if problems:
        raise InvalidArguments(problems)
    return sizes


def _check_run(
    jobs: list[GenerateConfig], skipped: list[bool],
) -> tuple[list[tuple[int, int]], list[GenerateConfig], WeightPlan, dict[VideoShape, MemoryEstimate]]:
    """``--dry_run``: every check a run makes before it loads a model (the ``skipped`` videos'
    too); each video's width and height, the videos with ``--fit_memory``'s placement for those
    a run would make, the weights' memory plan and the videos' estimates the fit made (``_fit``)."""
    arguments = _load_arguments(jobs[0])
    sizes = _output_sizes(jobs)
    jobs, arguments, fit = _fit(jobs, sizes, arguments, [not skip for skip in skipped])
    from wan_runtime.pipelines import check_pipeline

    return sizes, jobs, check_pipeline(**arguments), {} if fit is None else dict(fit.estimates)


def _fit(
    jobs: list[GenerateConfig], sizes: list[tuple[int, int]], arguments: dict[str, object],
    made: list[bool] | None = None,
) -> tuple[list[GenerateConfig], dict[str, object], MemoryFit | None]:
    """``--fit_memory``: the videos and ``load_pipeline``'s ``arguments`` with the placement it
    chooses (``wan_runtime.pipelines.memory_fit``) for the videos of ``sizes`` a run makes
    (``made``; default all), told in a line, and the fit (each video's estimate under it); without
    the flag (or a video to make), the same videos and arguments and None."""
    videos = [(job, size) for job, size, make in zip(jobs, sizes, made or [True] * len(jobs), strict=True)
              if make]
    request = None if not videos else videos[0][0].fit_memory
    if request is None:
        return jobs, arguments, None
    from wan_runtime.pipelines.memory_fit import NoFit, fit_memory

    # The placement flags the command line left out are the fit's to choose.
    options = {name: value for name, value in arguments.items()
               if name not in PLACEMENT_FLAGS or name in request.given}
    shapes = [_video_shape(job, size) for job, size in videos]
    try:
        fit = fit_memory(videos=shapes, budget_gib=request.budget_gib, **options)
    except NoFit as err:
        lines = [job.batch_line for (job, _), shape in zip(videos, shapes, strict=True) if shape == err.video]
        if lines[0] is None:
            raise
        raise NoFit(f"--batch {line_numbers(lines)}: {err}", err.video) from err
    if videos[0][0].launch.main:
        print(f"fit_memory: {fit.describe()}", flush=True)
    placement = fit.options
    return [dataclasses.replace(job, **placement) for job in jobs], {**arguments, **placement}, fit


def _print_plan(
    plans: list[tuple[GenerateConfig, tuple[int, int]]], weights: WeightPlan,
    estimates: dict[VideoShape, MemoryEstimate],
) -> None:
    """What a run of this command line would make (each video with its width and height) and
    with what, as ``write_video`` prints it, and what its weights take of the device's memory (each
    video's peak worked out once per shape, unless in ``estimates``)."""
    from wan_runtime.pipelines.inputs import check_guide_scale

    if not plans:
        print("dry run: every argument and file is in order (nothing was loaded or generated)")
        return
    videos = "one video" if len(plans) == 1 else f"{len(plans)} videos, loading the models once"
    print(f"dry run: every argument and file is in order (nothing was loaded or generated); a run would "
          f"make {videos}:")
    for job, (width, height) in plans:
        spec = TASKS[job.task]
        run = {
            "task": job.task, "prompt": job.prompt, "n_prompt": job.negative_prompt or spec.negative_prompt,
            "seed": job.base_seed if job.base_seed >= 0 else "random",
            "size": f"{width}*{height}",
            "frame_num": job.frame_num if job.audio is None else _speech_frames(job),
            "sampling_steps": job.sample_steps,
            "guide_scale": check_guide_scale(job.sample_guide_scale, spec),  # i2v-A14B: one per expert
            "shift": job.sample_shift, "sample_solver": job.sample_solver, "vae_tiling": job.vae_tiling,
        }
        if job.batch_line is not None:
            print(f"--batch line {job.batch_line}:")
        name = job.save_file or default_save_file(job.task, job.size, job.prompt, None, job.ulysses_size,
                                                  job.batch_line)
        note = (" (the official default name)" if job.save_file is None else
                " (exists: the run replaces it)" if job.save_file.is_file() else "")
        print(f"  save_file: {name}{note}")
        for key, value in made_with(job, run).items():
            print(f"  {key}: {value}")
        print(f"  memory: {_peak_memory(job, (width, height), weights, estimates)}")
    if weights.device.type != "cpu":
        print(f"memory: the weights take {weights.describe()}")
    print(_host_memory_line(weights))


def _speech_frames(job: GenerateConfig) -> str:
    """What an s2v-14B video's speech makes: its clips, the frames they make and those the MP4
    keeps, which ends with the speech (``write_video``)."""
    from wan_runtime.models.audio_encoder import SAMPLE_RATE, speech_clip_count
    from wan_runtime.pipelines.s2v import frames_made

    fps = TASKS[job.task].fps
    started = speech_clip_count(job.audio.size, job.infer_frames, fps)
    clips = speech_clip_count(job.audio.size, job.infer_frames, fps, job.num_clip)
    capped = f" (--num_clip {job.num_clip} of the {started} the speech starts)" if clips < started else ""
    made = frames_made(clips, job.infer_frames, job.start_from_ref)
    kept = min(made, heard_frames(job.audio.size, fps))
    return (f"{clips} clip{'s' * (clips > 1)} of {job.infer_frames} frames{capped}: {made} frames, the MP4 "
            f"{kept} of them ({kept / fps:.2f} s; the speech lasts {job.audio.size / SAMPLE_RATE:.2f} s)")


def _host_memory_line(weights: WeightPlan) -> str:
    """What the weights take of CPU memory (each process's, under torchrun) and what is free."""
    from wan_runtime.pipelines.host_memory import (
        ENV_VAR,
        free_memory,
        free_to_check,
        host_plan,
        local_processes,
    )

    checked = free_to_check()
    free = free_memory() if checked is None else checked
    have = "" if free is None else f"; the machine has {free.describe()}"
    if free is not None and checked is None:
        have += f" (not checked: {ENV_VAR}=0)"
    local = local_processes()
    each = "" if weights.options.world == 1 else (
        f" in each of this machine's {local} processes" if local > 1 else " in this machine's one process")
    return f"memory: the weights take {host_plan(weights).describe()}{each}{have}"


def _make_videos(
    jobs: list[GenerateConfig], args: argparse.Namespace
) -> tuple[list[int], tuple[GenerateConfig, Pipeline, torch.Tensor, float | None] | None]:
    """Load the pipeline once and make each video, rank 0 writing all but the last; the batch
    lines whose video failed on its input or on NaNs (a batch goes on without them, unless under
    torchrun, where the processes could part ways; a video alone raises its failure, as does
    running out of memory, after which the models' placement is not to be trusted), and the last
    video with what ``write_video`` takes (None if it failed)."""
    arguments = _load_arguments(jobs[0])
    sizes = _output_sizes(jobs)
    jobs, arguments, fit = _fit(jobs, sizes, arguments)
    from wan_runtime.pipelines import load_pipeline

    start = time.perf_counter()
    try:
        pipeline = load_pipeline(**arguments)
    except torch.OutOfMemoryError as err:  # the advice reads the placement --fit_memory chose
        most = None if fit is None else fit.plan.most_streamed
        raise VideoOutOfMemory(str(err), jobs[0], LOADING, "model loading", most) from err
    load_s: float | None = time.perf_counter() - start
    if jobs[0].launch.main and pipeline.weight_plan is not None:
        print(f"memory: the weights take {pipeline.weight_plan.describe()}", flush=True)
    if jobs[0].launch.main and jobs[0].loras:  # a LoRA that changed nothing would go unnoticed
        print(f"loras merged: {_lora_changes(pipeline)}", flush=True)
    estimates = {} if fit is None else dict(fit.estimates)  # more shapes join it as they come
    if jobs[0].compile:  # else a first step many times longer than the next looks like a hang
        print("compile: the first sampling step also compiles the DiT blocks and takes longer", flush=True)
    failed, last = [], None
    count = 0
    try:
        for count, (job, size) in enumerate(zip(jobs, sizes, strict=True), start=1):
            if job.batch_line is not None and job.launch.main:  # where a long batch has got to
                prompt = _one_line(job.prompt)[:80]
                print(f"--batch line {job.batch_line} (video {count} of {len(jobs)}): {prompt}", flush=True)
            if job.launch.main and pipeline.weight_plan is not None:
                print(f"memory: {_peak_memory(job, size, pipeline.weight_plan, estimates)}", flush=True)
            try:
                video = _make_video(pipeline, job)
            except torch.OutOfMemoryError as err:
                if job.batch_line is not None and job.launch.main:
                    _error(f"--batch line {job.batch_line} ran out of GPU memory: the batch stops there "
                           f"({_RESUME})")
                most = None if pipeline.weight_plan is None else pipeline.weight_plan.most_streamed
                raise VideoOutOfMemory(str(err), job, getattr(err, "stage", None),
                                       getattr(err, "stage_name", None), most) from err
            except (InputError, CheckpointError, NumericalError) as err:
                if job.batch_line is None or args.debug:
                    raise
                if job.launch.distributed:
                    _stop_batch(jobs, count, failed, err)
                going_on = "" if job is jobs[-1] else "; going on with the next line"
                _error(f"--batch line {job.batch_line}: {_one_line(str(err))}{going_on}")
                failed.append(job.batch_line)
                continue
            if job is jobs[-1]:
                last = (job, pipeline, video, load_s)
            elif job.launch.main:  # the other processes go on and wait for it in their next collective
                if not _written(job, pipeline, video, load_s, args, going_on=True):
                    failed.append(job.batch_line)
            load_s = None  # paid once, by the first video
    except KeyboardInterrupt as err:
        if jobs[0].batch_line is None:
            raise
        raise _BatchInterrupted(_interrupted_batch(jobs, count, failed)) from err
    return failed, last


class _BatchStopped(Exception):
    """A batch under torchrun stopped at a video that failed, as told."""


def _stop_batch(jobs: list[GenerateConfig], count: int, failed: list[int], err: Exception) -> NoReturn:
    """Tell that the ``count``-th video of ``jobs`` failed with ``err`` and stop the batch: under
    torchrun the processes cannot go on without it, as one that had not failed would wait for the
    others in the next video's collectives. ``failed``: the earlier videos not written."""
    job = jobs[count - 1]
    _error(f"--batch line {job.batch_line}: {_one_line(str(err))}; the batch stops there, as the processes "
           f"of a torchrun launch go on together ({_RESUME})")
    if job.launch.main:
        print(f"batch: {_tally(jobs, count, [*failed, job.batch_line])}", flush=True)
    raise _BatchStopped from err


# What a batch that stopped part way is run again with.
_RESUME = "run it again with --skip_existing not to make the videos written so far again"


def _tally(jobs: list[GenerateConfig], count: int, failed: list[int], current: str = "",
           skipped: list[int] | None = None) -> str:
    """What a batch that made ``jobs`` (the lines not ``skipped``, whose file exists) and stopped
    at its ``count``-th video made: the videos written, the lines that ``failed`` (``current``, if
    given, says what became of the ``count``-th) and the lines not made."""
    notes = [f"{line_numbers(sorted(failed))} failed, above"] if failed else []
    if current:
        notes.append(f"line {jobs[count - 1].batch_line} {current}")
    if count < len(jobs):
        notes.append(f"{line_numbers([later.batch_line for later in jobs[count:]])} not made")
    if skipped:
        notes.append(f"{line_numbers(skipped)} skipped, the file exists")
    written = count - len(failed) - (1 if current else 0)
    return f"wrote {written} of {len(jobs)} videos" + (f" ({'; '.join(notes)})" if notes else "")


class _BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) in a batch's videos, with what the batch had made (``unwritten``)."""

    def __init__(self, unwritten: str) -> None:
        super().__init__(unwritten)
        self.unwritten = unwritten


def _interrupted_batch(jobs: list[GenerateConfig], count: int, failed: list[int]) -> str:
    """What a batch interrupted in its ``count``-th video (0: none yet) made and left, for the
    line that tells the interruption."""
    if count == 0:
        return "no video was written"
    return f"the batch {_tally(jobs, count, failed, 'not finished')}; {_RESUME}"


def _written(job: GenerateConfig, pipeline: Pipeline, video: torch.Tensor, load_s: float | None,
             args: argparse.Namespace, going_on: bool) -> bool:
    """``write_video`` for a video of a batch, whose failure to be written (a full disk, a folder
    removed) is told and costs that video alone; whether it was written."""
    try:
        write_video(job, pipeline, video, load_s)
    except OSError as err:
        if args.debug:
            raise
        _error(f"--batch line {job.batch_line}: {_one_line(str(err))}"
               f"{'; going on with the next line' if going_on else ''}")
        return False
    return True


def _peak_memory(
    job: GenerateConfig, size: tuple[int, int], weights: WeightPlan,
    estimates: dict[VideoShape, MemoryEstimate],
) -> str:
    """What ``job``'s video of ``size`` takes of the device's memory at its peak, at least, in words
    (``wan_runtime.pipelines.activation_memory``; under torchrun, in each process), worked out once
    per video shape (``estimates``); a warning when that is more than the GPU has."""
    from wan_runtime.pipelines import estimate_memory

    spec = TASKS[job.task]
    video = _video_shape(job, size)
    if video not in estimates:
        try:
            estimates[video] = estimate_memory(weights, spec, video, job.compile, job.ulysses_size,
                                               job.cuda_graphs)
        except Exception as err:  # an estimate that fails must not cost the video
            return f"the video's peak could not be worked out ({type(err).__name__}: {_one_line(str(err))})"
    estimate = estimates[video]
    stage = estimate.busiest_bound
    takes = "takes in each process" if job.launch.distributed else "takes"
    if weights.device.type == "cuda" and stage is not None:
        capacity = torch.cuda.get_device_properties(weights.device).total_memory
        if stage.total > capacity:
            remedy = estimate.remedy_for(stage, flags=True)
            warnings.warn(f"this video will run out of GPU memory: it {takes} {estimate.describe(stage)}, "
                          f"more than the {capacity / 2**30:.2f} GiB the GPU has; {remedy}", stacklevel=2)
    return f"the video {takes} {estimate.describe()}"


def _video_shape(job: GenerateConfig, size: tuple[int, int]) -> VideoShape:
    """What sizes ``job``'s video of ``size`` (width, height) in memory."""
    from wan_runtime.pipelines import VideoShape
    from wan_runtime.pipelines.activation_memory import speech_video
    from wan_runtime.pipelines.inputs import check_guide_scale

    spec = TASKS[job.task]
    width, height = size
    guide = check_guide_scale(job.sample_guide_scale, spec)
    cache = job.cache if job.cache.enabled else None
    if job.audio is None:
        return VideoShape(width, height, job.frame_num, job.image is not None, guide, job.vae_tiling,
                          cache=cache)
    return speech_video(width, height, job.infer_frames, guide, job.vae_tiling, job.audio.size, job.num_clip,
                        job.start_from_ref, job.pose_video is not None, spec.fps, cache=cache)


def _make_video(pipeline: Pipeline, config: GenerateConfig) -> torch.Tensor:
    """Generate the video ``config`` asks for with the loaded ``pipeline``."""
    common = {
        "size": config.size, "sampling_steps": config.sample_steps, "guide_scale": config.sample_guide_scale,
        "shift": config.sample_shift, "sample_solver": config.sample_solver, "seed": config.base_seed,
        "progress": config.launch.main, "cache": config.cache, "n_prompt": config.negative_prompt,
        "vae_tiling": config.vae_tiling,
    }
    if config.audio is None:
        video = pipeline.generate(config.prompt, image=config.image, frame_num=config.frame_num, **common)
    else:
        video = pipeline.generate(
            config.prompt, image=config.image, audio=config.audio, num_clip=config.num_clip,
            infer_frames=config.infer_frames, start_from_ref=config.start_from_ref,
            pose_video=config.pose_video, **common,
        )
    return video


def _launch() -> Launch:
    """This process's place in a torchrun launch; one process's when the environment describes
    none (``resolve`` tells that problem)."""
    try:
        return Launch.from_env()
    except InputError:
        return Launch()


LOADING = "load"  # VideoOutOfMemory's stage while the models load


class VideoOutOfMemory(torch.OutOfMemoryError):
    """Running out of device memory while making ``video`` or loading the models for it (whose
    settings, a batch line's and ``--fit_memory``'s placement, the advice reads), in the run's
    stage ``stage`` (``LOADING`` while loading; ``stage_name`` as its summary names it; both None
    outside the stages); ``most_streamed``: the most blocks ``--stream_blocks`` can stream (None:
    not known)."""

    def __init__(self, message: str, video: GenerateConfig, stage: str | None,
                 stage_name: str | None, most_streamed: int | None = None) -> None:
        super().__init__(message)
        self.video = video
        self.stage, self.stage_name = stage, stage_name
        self.most_streamed = most_streamed


def _memory_remedy(args: argparse.Namespace, video: GenerateConfig | None = None,
                   stage: str | None = None, most_streamed: int | None = None) -> str:
    """What frees device memory, of what this command line (or the video being made, if one was,
    with ``--fit_memory``'s placement) has not done yet (no more streaming than ``most_streamed``
    blocks); in the VAE decode (``stage`` ``vae_decode``), decoding in tiles first; while
    ``LOADING``, only what lowers the weights; after a fit, first a smaller budget."""
    from wan_runtime.pipelines.memory_advice import (
        Step,
        say,
        tiling_step,
        token_steps,
        video_steps,
        weight_steps,
    )
    from wan_runtime.pipelines.memory_plan import PlanOptions

    flags = args if video is None else video  # the same names
    launch = _launch()
    options = PlanOptions(
        dtype=torch.float32 if flags.dtype in ("float32", torch.float32) else torch.bfloat16,
        offload_model=resolved_offload(flags.offload_model, launch), t5_cpu=bool(flags.t5_cpu),
        convert_model_dtype=bool(flags.convert_model_dtype), dit_fsdp=bool(flags.dit_fsdp),
        t5_fsdp=bool(flags.t5_fsdp), stream_blocks=flags.stream_blocks or 0, dit_fp8=bool(flags.dit_fp8),
        world=launch.world, cuda_graphs=bool(flags.cuda_graphs),
    )
    steps = weight_steps(options, most_streamed)
    if args.fit_memory is not None:
        steps.insert(0, Step("fit_memory", "smaller", "a budget in GiB; the fit's estimate fell short here"))
    if stage == LOADING:  # the video's size does not matter yet
        return say(steps, flags=True, nothing="no flag lowers the weights further: it takes a GPU with more "
                                              "memory (or more GPUs)")
    # Smaller tiles lower the decode alone; tiles at all, the peak of a stage not known.
    tiles = tiling_step(flags.vae_tiling or 0)
    if tiles and (stage == "vae_decode" or not flags.vae_tiling):
        steps.insert(0 if stage == "vae_decode" else len(steps), tiles)
    if stage in (None, "denoise"):
        steps += token_steps(launch.world, flags.ulysses_size, cuda_graphs=flags.cuda_graphs)
    frames = "infer_frames" if flags.task == "s2v-14B" else "frame_num"
    return say(steps + video_steps(frames), flags=True)


def _warning_line(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"warning: {_one_line(str(message))}", file=sys.stderr)


def _error(message: str) -> None:
    print(f"{_error_prefix()}{message}", file=sys.stderr)


def _error_prefix() -> str:
    # Each process of a torchrun launch fails on its own: say which one.
    launch = _launch()
    return f"error: rank {launch.rank}: " if launch.distributed else "error: "


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    cli()
