"""A made video's MP4: its default name, what made it (stored in the file and printed) and the
writing itself."""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from wan_runtime.audio_io import decode_audio, heard_frames
from wan_runtime.errors import InputError
from wan_runtime.input_digests import INPUTS_KEY, input_digests
from wan_runtime.video_io import write_mp4
from wan_runtime.video_settings import FLAGS_KEY, SOFTWARE, recorded_flags, run_setup

if TYPE_CHECKING:
    from wan_runtime.cli_args import GenerateConfig
    from wan_runtime.lora import Lora
    from wan_runtime.pipelines import Pipeline, RunReport


TIME_OF_WRITING = "<YYYYmmdd_HHMMSS>"


def default_save_file(task: str, size: str, prompt: str, now: datetime | None, ulysses_size: int = 1,
                      batch_line: int | None = None) -> Path:
    """The official default output name (control characters, too, made ``_``):
    ``<task>_<size>_<ulysses_size>_<prompt stub>_<YYYYmmdd_HHMMSS>.mp4``, with ``_line<N>``
    before the suffix for line N of a ``--batch`` file (whose videos may share prompt and second);
    ``now`` None leaves ``TIME_OF_WRITING`` in place of the time (a plan's name)."""
    size_part = size.replace("*", "x") if sys.platform == "win32" else size
    # Line breaks and other control characters too, which the official name keeps, would split
    # the name in listings and in the "wrote" line.
    stub = "".join("_" if c in " /" or ord(c) < 32 or ord(c) == 127 else c for c in prompt)[:50]
    line = "" if batch_line is None else f"_line{batch_line}"
    stamp = TIME_OF_WRITING if now is None else now.strftime("%Y%m%d_%H%M%S")
    return Path(f"{task}_{size_part}_{ulysses_size}_{stub}_{stamp}{line}.mp4")


def write_video(
    config: GenerateConfig, pipeline: Pipeline, video: torch.Tensor, load_s: float | None
) -> None:
    """Write the MP4 and print what made it (the load time, unless None: another video's)."""
    report = pipeline.last_report
    save_file = config.save_file or default_save_file(config.task, config.size, config.prompt, datetime.now(),
                                                      config.ulysses_size, config.batch_line)
    digests, audio = _inputs(config)  # reads the inputs again: not the writing's time
    start = time.perf_counter()
    cut = ""
    if config.audio is not None:
        # And ends with it: the official merge (ffmpeg -shortest) drops the last clip's frames past it.
        heard = heard_frames(config.audio.size, pipeline.fps)
        if heard < video.shape[1]:
            cut = f"; the last {video.shape[1] - heard} of {video.shape[1]} made, past the speech, left out"
            video = video[:, :heard]
    # The settings describe the file: its frames, not the clips' (last_report.frame_num keeps those).
    settings = made_with(config, {**_run_fields(report), "frame_num": video.shape[1]})
    # What the step cache did is kept beside the settings (printed already, as the run ended).
    telemetry = {"step_cache": report.step_cache} if report.step_cache else {}
    metadata = {**settings, **telemetry, FLAGS_KEY: recorded_flags(config, report.seed),
                INPUTS_KEY: digests}
    # A name the user did not give replaces nothing (another run of the prompt that ended in the
    # same second, say with another seed).
    save_file = write_mp4(video, save_file, fps=pipeline.fps, metadata=metadata, audio=audio,
                          keep_existing=config.save_file is None)
    write_s = time.perf_counter() - start

    frames, height, width = video.shape[1:]
    print(f"wrote {save_file} ({frames} frames, {width}x{height}, {pipeline.fps} fps{cut})")
    for key, value in settings.items():
        print(f"  {key}: {value}")
    timings = {**({} if load_s is None else {"load": load_s}), **report.timings, "write": write_s}
    print("timings: " + ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in timings.items()))
    peak = report.peak_memory_bytes
    reserved = " reserved (the CUDA graphs' pool counts only there)" if config.cuda_graphs else ""
    measured = "not measured on this device" if peak is None else f"{peak / 2**30:.2f} GiB{reserved}"
    print(f"peak memory: {measured}")
    if report.cuda_graphs is not None:
        print(report.graphs_line())


def _inputs(config: GenerateConfig) -> tuple[dict[str, str], Path | np.ndarray | None]:
    """The input files' digests to store in the video, and its sound track (``_speech``): an
    ``--audio`` file changed since the run read it has none, as the video is not of its sound."""
    digests = input_digests(config)
    audio = _speech(config)
    if config.audio_path is not None and audio is config.audio:
        digests.pop(str(Path(config.audio_path).absolute()), None)
    return digests, audio


def _speech(config: GenerateConfig) -> Path | np.ndarray | None:
    """The sound track of an s2v video, as the official output carries the speech: the ``--audio``
    file, muxed in as it is; the samples the video was made from (16 kHz mono) for the demo's
    sound and for a file changed or gone since the run read it (with a warning)."""
    if config.audio_path is None:
        return config.audio
    try:
        unchanged = np.array_equal(decode_audio(config.audio_path, "--audio"), config.audio)
    except InputError:
        unchanged = False
    if unchanged:
        return config.audio_path
    warnings.warn(f"--audio {config.audio_path} changed or went since the run read it; the video carries the "
                  "speech it was made from, as the run read it (16 kHz mono)", stacklevel=2)
    return config.audio


def _run_fields(report: RunReport) -> dict[str, object]:
    """The report's account of the run (seed and defaults resolved), without timings and memory."""
    fields = dataclasses.asdict(report)
    del fields["timings"], fields["peak_memory_bytes"], fields["cuda_graphs"], fields["step_cache"]
    del fields["setup"]  # made_with records it from the command line (run_setup), with --t5_cpu
    return fields


def made_with(config: GenerateConfig, run: dict[str, object]) -> dict[str, object]:
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
        "software": SOFTWARE,
        **run,
        "image": image,
        "dtype": str(config.dtype).removeprefix("torch."),
        "convert_model_dtype": config.convert_model_dtype,
        **run_setup(config),
        "offload_model": config.offload_model,
        "stream_blocks": config.stream_blocks,
        "dit_fp8": config.dit_fp8,
        "cuda_graphs": config.cuda_graphs,
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
