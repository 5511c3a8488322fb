"""``python -m wan_runtime.generate``: parse and validate, run a pipeline, write the MP4.

Exit codes: 0 success, 2 bad input (every problem on its own line, before any model loads),
1 failure at run time, 130 interrupted. No traceback is shown unless ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from wan_runtime import __version__, demo
from wan_runtime.cli_args import GenerateConfig, InvalidArguments, build_parser, resolve
from wan_runtime.distributed.launch import Launch
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.tasks import TASKS
from wan_runtime.video_io import write_mp4

if TYPE_CHECKING:
    from wan_runtime.lora import Lora
    from wan_runtime.pipelines import Pipeline, RunReport


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Under ``torchrun`` every process runs it; rank 0 alone prints what a run reports and writes
    the video, and the other processes say only what went wrong in them.
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        if not args.debug:  # a notice for the user reads as one line, not a source location
            warnings.showwarning = _warning_line
        if not _launch().main:
            warnings.simplefilter("ignore")
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return _generate(resolve(args))
    except InvalidArguments as err:
        # Rank 0 tells what every process finds; another process what concerns it alone.
        for problem in err.problems if _launch().main else err.own:
            _error(problem)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        if _launch().distributed:  # torchrun stops every process when one fails
            _error("stopped; no video was written (if another process failed, its error is above)")
        else:
            _error("interrupted; no video was written")
        return 130
    except (InputError, CheckpointError) as err:
        # Found only while loading or running: still a problem with what the user gave.
        if args.debug:
            raise
        _error(_one_line(str(err)))
        return 2
    except torch.OutOfMemoryError as err:
        if args.debug:
            raise
        # torch's first two sentences say what and how much; the rest is allocator advice.
        what = ". ".join(_one_line(str(err)).split(". ")[:2])
        _error(f"out of memory: {what}; {_memory_remedy(args)}")
        return 1
    except Exception as err:
        if args.debug:
            raise
        if args.compile and type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
            # A compiler report runs to pages; its first line names the failure.
            first = _one_line(next(iter(str(err).strip().splitlines()), ""))
            _error(f"torch.compile failed: {type(err).__name__}: {first}; run without --compile "
                   "(or with --debug for the traceback)")
            return 1
        _error(f"{type(err).__name__}: {_one_line(str(err))} (run with --debug for the traceback)")
        return 1


def cli() -> None:
    """Entry point: ``main`` with SIGTERM handled like Ctrl-C, so partial output is removed."""
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())


def default_save_file(task: str, size: str, prompt: str, now: datetime, ulysses_size: int = 1) -> Path:
    """The official default output name:
    ``<task>_<size>_<ulysses_size>_<prompt stub>_<YYYYmmdd_HHMMSS>.mp4``."""
    size_part = size.replace("*", "x") if sys.platform == "win32" else size
    stub = prompt.replace(" ", "_").replace("/", "_")[:50]
    return Path(f"{task}_{size_part}_{ulysses_size}_{stub}_{now.strftime('%Y%m%d_%H%M%S')}.mp4")


def _generate(config: GenerateConfig) -> int:
    launch = config.launch
    launch.start(torch.device(config.device))
    try:
        if config.dry_run:
            width, height = _check_run(config)
        else:
            pipeline, video, load_s = _make_video(config)
    except BaseException:
        launch.abandon()
        raise
    # Every process made the same video; rank 0 writes it once the others are done, so that none
    # waits in a collective through the write.
    launch.stop()
    if launch.main and config.dry_run:
        _print_plan(config, width, height)
    elif launch.main:
        _write(config, pipeline, video, load_s)
    return 0


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
        "loras": config.loras, "stream_blocks": config.stream_blocks,
    }


def _check_run(config: GenerateConfig) -> tuple[int, int]:
    """``--dry_run``: every check a run makes before it loads a model; the video's width and height."""
    arguments = _load_arguments(config)
    from wan_runtime.pipelines import check_output_size, check_pipeline

    size = check_output_size(config.task, config.image, config.size)
    check_pipeline(**arguments)
    return size


def _print_plan(config: GenerateConfig, width: int, height: int) -> None:
    """What a run of this command line would make and with what, as ``_write`` prints it."""
    from wan_runtime.pipelines.inputs import check_guide_scale

    spec = TASKS[config.task]
    run = {
        "task": config.task, "prompt": config.prompt, "n_prompt": spec.negative_prompt,
        "seed": config.base_seed if config.base_seed >= 0 else "random",
        "size": f"{width}*{height}",
        "frame_num": config.frame_num if config.audio is None else "--infer_frames per clip",
        "sampling_steps": config.sample_steps,
        "guide_scale": check_guide_scale(config.sample_guide_scale, spec),  # i2v-A14B: one per expert
        "shift": config.sample_shift, "sample_solver": config.sample_solver,
    }
    print("dry run: every argument and file is in order (nothing was loaded or generated); a run would make")
    for key, value in _settings(config, run).items():
        print(f"  {key}: {value}")


def _make_video(config: GenerateConfig) -> tuple[Pipeline, torch.Tensor, float]:
    """Load the pipeline and generate; the pipeline, the video and the load time in seconds."""
    arguments = _load_arguments(config)
    # Imported only now: bad input is refused without importing the models.
    from wan_runtime.pipelines import check_output_size, load_pipeline

    if config.image is not None:  # an image too extreme for the size fails before minutes of loading
        check_output_size(config.task, config.image, config.size)
    start = time.perf_counter()
    pipeline = load_pipeline(**arguments)
    load_s = time.perf_counter() - start
    if config.compile:  # else a first step many times longer than the next looks like a hang
        print("compile: the first sampling step also compiles the DiT blocks and takes longer", flush=True)
    common = {
        "size": config.size, "sampling_steps": config.sample_steps, "guide_scale": config.sample_guide_scale,
        "shift": config.sample_shift, "sample_solver": config.sample_solver, "seed": config.base_seed,
        "progress": config.launch.main, "cache": config.cache,
    }
    if config.audio is None:
        video = pipeline.generate(config.prompt, image=config.image, frame_num=config.frame_num, **common)
    else:
        video = pipeline.generate(
            config.prompt, image=config.image, audio=config.audio, num_clip=config.num_clip,
            infer_frames=config.infer_frames, start_from_ref=config.start_from_ref,
            pose_video=config.pose_video, **common,
        )
    return pipeline, video, load_s


def _write(config: GenerateConfig, pipeline: Pipeline, video: torch.Tensor, load_s: float) -> None:
    """Write the MP4 and print what made it."""
    report = pipeline.last_report
    save_file = config.save_file or default_save_file(config.task, config.size, config.prompt, datetime.now(),
                                                      config.ulysses_size)
    settings = _settings(config, _run_fields(report))
    start = time.perf_counter()
    # The official s2v output carries the speech; the file is muxed in (the demo's sound as samples).
    audio = config.audio_path or config.audio
    write_mp4(video, save_file, fps=pipeline.fps, metadata=settings, audio=audio)
    write_s = time.perf_counter() - start

    frames, height, width = video.shape[1:]
    print(f"wrote {save_file} ({frames} frames, {width}x{height}, {pipeline.fps} fps)")
    for key, value in settings.items():
        print(f"  {key}: {value}")
    timings = {"load": load_s, **report.timings, "write": write_s}
    print("timings: " + ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in timings.items()))
    peak = report.peak_memory_bytes
    print(f"peak memory: {'not measured on this device' if peak is None else f'{peak / 2**30:.2f} GiB'}")
    if config.demo:
        print(demo.NOTICE)


def _run_fields(report: RunReport) -> dict[str, object]:
    """The report's account of the run (seed and defaults resolved), without timings and memory."""
    fields = dataclasses.asdict(report)
    del fields["timings"], fields["peak_memory_bytes"]
    return fields


def _settings(config: GenerateConfig, run: dict[str, object]) -> dict[str, object]:
    """What made this video: ``run``, the run's account (``_run_fields``), and the command line's
    other settings; stored in the MP4 and printed."""
    if config.image_path is not None:
        image = str(config.image_path)
    else:
        image = None if config.image is None else "built-in demo image"
    speech = {}
    if config.audio is not None:
        speech = {
            "audio": "built-in demo sound" if config.audio_path is None else str(config.audio_path),
            "infer_frames": config.infer_frames,
            "num_clip": config.num_clip,
            "start_from_ref": config.start_from_ref,
            "pose_video": None if config.pose_video is None else str(config.pose_video),
        }
    return {
        "software": f"wan_runtime {__version__}",
        **run,
        "image": image,
        "dtype": str(config.dtype).removeprefix("torch."),
        "compile": config.compile,
        "stream_blocks": config.stream_blocks,
        "cache": config.cache.describe(),
        "loras": [_describe_lora(lora) for lora in config.loras],
        "demo": config.demo,
        **_parallel_settings(config),
        **speech,
    }


def _describe_lora(lora: Lora) -> str:
    """``PATH=STRENGTH``, with the expert it changes alone, if one."""
    expert = "" if lora.expert is None else f" ({lora.expert.replace('_', '-')} expert)"
    return f"{lora.path}={lora.strength:g}{expert}"


def _parallel_settings(config: GenerateConfig) -> dict[str, object]:
    """How a several-process run shared the work (nothing for one process)."""
    if not config.launch.distributed:
        return {}
    return {"processes": config.launch.world, "ulysses_size": config.ulysses_size,
            "dit_fsdp": config.dit_fsdp, "t5_fsdp": config.t5_fsdp}


def _launch() -> Launch:
    """This process's place in a torchrun launch; one process's when the environment describes
    none (``resolve`` tells that problem)."""
    try:
        return Launch.from_env()
    except InputError:
        return Launch()


def _memory_remedy(args: argparse.Namespace) -> str:
    """What frees device memory, of what this command line has not done yet."""
    steps = []
    several = _launch().distributed
    offloading = args.offload_model if args.offload_model is not None else not several
    if not offloading and not args.dit_fsdp:
        steps.append("--offload_model True (models wait on the CPU while another works)")
    if several and not args.dit_fsdp:
        steps.append("--dit_fsdp (each GPU holds a share of the DiT weights)")
    if several and not (args.t5_fsdp or args.t5_cpu):
        steps.append("--t5_fsdp (each GPU holds a share of the text encoder)")
    if not (args.t5_cpu or args.t5_fsdp):
        steps.append("--t5_cpu (the text encoder stays on the CPU)")
    if not args.dit_fsdp:
        more = "more " if args.stream_blocks > 0 else ""
        steps.append(f"{more}--stream_blocks (DiT blocks wait in CPU memory until they run)")
    frames = "--infer_frames" if args.task == "s2v-14B" else "--frame_num"
    steps.append(f"a smaller --size or {frames}")
    return "to fit, try " + ", ".join(steps)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _warning_line(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"warning: {_one_line(str(message))}", file=sys.stderr)


def _error(message: str) -> None:
    # Each process of a torchrun launch fails on its own: say which one.
    launch = _launch()
    where = f"rank {launch.rank}: " if launch.distributed else ""
    print(f"error: {where}{message}", file=sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    cli()
