"""``fit_memory``: where the models wait, chosen so that each video's peak fits a GPU's memory.

Three of ``load_pipeline``'s options place the weights without changing what is computed on the
GPU: ``offload_model`` (the big models take turns on the device), ``stream_blocks`` (the DiTs'
last blocks wait in CPU memory until they run) and ``t5_cpu`` (the text encoder runs on the CPU,
an official option whose prompt encodings differ from the GPU's by rounding). ``fit_placement``
tries them from the fastest run to the most frugal and takes the first under which every stage
of every video fits the budget (``wan_runtime.pipelines.activation_memory``'s estimate):

- the text encoder on the GPU before the CPU, since on the CPU the video is not quite the one a
  GPU encoder makes;
- then the fewest streamed blocks, since their copies cost every forward of every step;
- then every model staying on the GPU before them taking turns, which costs seconds of copies
  per video.

Options the caller gives are kept. The lossy ones (``dit_fp8``, ``vae_tiling``) are never
chosen: when nothing fits, the error names them with what else would lower the peak.

Under ``torchrun`` the estimates are of one process's share (``ulysses_size``, ``dit_fsdp``,
``t5_fsdp``), FSDP's shards stay on the GPUs, and every process chooses the same placement from
the least free memory of any of them (GPU and machine, the machine's taken by each of its
processes, as many as the most of any machine), since processes that share a generation must
load alike.

An estimate counts tensors alone. On an H100 the bf16 VAE decodes at 720p, whole and tiled,
allocated 0.8-3.0 GiB (1.18-1.51x) more than the tensors counted: cuDNN's workspaces, which grow
less than the tensors do. A stage fits when its weights (counted exactly), its activations times
``ACTIVATION_MARGIN`` and ``WORKSPACE`` come within the budget, which covers each of those
measurements; the budget is by default the GPU's free memory less ``RESERVED`` for the
allocator's rounding and fragments.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from wan_runtime.checks import PLACEMENT_FLAGS
from wan_runtime.distributed.launch import from_every_rank
from wan_runtime.errors import InputError, LaunchInputError
from wan_runtime.pipelines.activation_memory import (
    MemoryEstimate,
    StagePeak,
    VideoShape,
    check_video,
    estimate_memory,
)
from wan_runtime.pipelines.host_memory import (
    FreeMemory,
    HostPlan,
    free_to_check,
    host_plan,
    host_remedy,
    local_processes,
)
from wan_runtime.pipelines.loading import checked_plan
from wan_runtime.pipelines.memory_plan import _GIB, WeightPlan
from wan_runtime.tasks import task_spec

# Room beyond the tensors counted (see the module's docstring).
ACTIVATION_MARGIN = 1.2
WORKSPACE = 2 * _GIB
RESERVED = _GIB


def needed(stage: StagePeak) -> int:
    """The bytes ``stage`` is given room for: its weights and its activations with the margin (or
    the weights FSDP gathers, if more), and the workspace."""
    with_margin = stage.weights + math.ceil(ACTIVATION_MARGIN * stage.activations)
    return max(with_margin, stage.working or 0) + WORKSPACE


@dataclasses.dataclass(frozen=True)
class MemoryFit:
    """The placement chosen (``plan``: its options and the weights' bytes under them), the
    ``budget`` in bytes, and each video's estimate under the placement, by its ``VideoShape`` (as
    ``check_video`` resolves it)."""

    plan: WeightPlan
    estimates: dict[VideoShape, MemoryEstimate]
    budget: int

    @property
    def options(self) -> dict[str, Any]:
        """``load_pipeline``'s arguments of the placement."""
        return {name: getattr(self.plan.options, name) for name in PLACEMENT_FLAGS}

    @property
    def busiest(self) -> StagePeak:
        """The stage that needs the most room, of all the videos."""
        return max((stage for estimate in self.estimates.values() for stage in estimate.stages), key=needed)

    def describe(self) -> str:
        """The placement and how close it comes to the budget (each process's, of its GPU), in words."""
        stage, world = self.busiest, self.plan.options.world
        each = "" if world == 1 else f" of each of the {world} GPUs"
        need, budget = _distinct_gib(needed(stage), self.budget)
        return (f"{_placement(self.plan)}: the {stage.stage} of the {stage.model} needs the most, "
                f"{need} GiB ({_room(stage)}) of the {budget} GiB budget{each}")


def _distinct_gib(first: int, second: int) -> tuple[str, str]:
    """``first`` and ``second`` bytes in GiB, with the decimals (2 to 4) that tell them apart
    where they differ: a need just over the budget must not read as equal to it (at 4 decimals
    the larger is rounded up and the smaller down)."""
    for digits in (2, 3):
        pair = f"{first / _GIB:.{digits}f}", f"{second / _GIB:.{digits}f}"
        if pair[0] != pair[1] or first == second:
            return pair
    up, down = (math.ceil, math.floor) if first > second else (math.floor, math.ceil)
    return f"{up(first / _GIB * 1e4) / 1e4:.4f}", f"{down(second / _GIB * 1e4) / 1e4:.4f}"


def _placement(plan: WeightPlan) -> str:
    return ", ".join(f"{name} {getattr(plan.options, name)}" for name in PLACEMENT_FLAGS)


def _room(stage: StagePeak) -> str:
    activations = f"{ACTIVATION_MARGIN:g} x {stage.activations / _GIB:.2f} GiB of activations"
    workspace = f"{WORKSPACE / _GIB:g} GiB of workspace"
    return f"{stage.weights / _GIB:.2f} GiB of weights, {activations} and {workspace}"


def placements(plan: WeightPlan, given: Mapping[str, Any]) -> Iterator[tuple[bool, bool, int]]:
    """Each ``(offload_model, t5_cpu, stream_blocks)`` to try, fastest run first (the module's
    order), the options in ``given`` kept as they are, and those FSDP's shards allow alone (they
    stay on the GPUs)."""
    o = plan.options
    given = {**({"offload_model": False, "stream_blocks": 0} if o.dit_fsdp else {}),
             **({"t5_cpu": False} if o.t5_fsdp else {}), **given}
    t5 = [given["t5_cpu"]] if "t5_cpu" in given else [False, True]
    streams = [given["stream_blocks"]] if "stream_blocks" in given else range(plan.most_streamed + 1)
    offload = [given["offload_model"]] if "offload_model" in given else [False, True]
    for t5_cpu in t5:
        for stream_blocks in streams:
            for offload_model in offload:
                yield offload_model, t5_cpu, stream_blocks


def fit_placement(
    plan: WeightPlan, estimates: Mapping[VideoShape, MemoryEstimate], budget: int, given: Mapping[str, Any],
    free: FreeMemory | None = None, local: int = 1,
) -> MemoryFit:
    """The first of ``placements`` of ``plan``'s models under which every stage of every video
    (``estimates``, made with ``plan``) ``needed`` at most ``budget`` bytes and, given the machine's
    ``free`` CPU memory, the weights waiting there fit it (``host_memory``; those of each of the
    ``local`` processes on the machine, together): in its RAM if one does, else with its swap;
    ``InputError`` naming what else would lower the peak when none does."""
    fitting_gpu: list[tuple[MemoryFit, HostPlan]] = []
    for offload_model, t5_cpu, stream_blocks in placements(plan, given):
        placed = plan.placed(offload_model, t5_cpu, stream_blocks)
        fit = MemoryFit(placed, {video: e.placed(placed) for video, e in estimates.items()}, budget)
        if needed(fit.busiest) <= budget:
            if free is None:
                return fit
            host = host_plan(placed)
            if host.on_machine(local).fits(free._replace(swap=0)):
                return fit
            fitting_gpu.append((fit, host))
    if free is not None:  # the placements that fit the GPU, then, with the swap
        swapping = next((f for f, host in fitting_gpu if host.on_machine(local).fits(free)), None)
        if swapping is not None:
            return swapping
    stage = fit.busiest
    video, estimate = next((v, e) for v, e in fit.estimates.items() if stage in e.stages)
    if fitting_gpu and free is not None:
        least, host = min(fitting_gpu, key=lambda pair: pair[1].peak)
        machine = "the machine's" if plan.options.world == 1 else "the least free machine's"
        raise NoFit(f"every placement that fits the video in {budget / _GIB:.2f} GiB of the GPU needs more "
                    f"CPU memory than {machine} {free.describe()}: the least, {_placement(least.plan)}, "
                    f"takes {host.describe(local)}; {host_remedy(least.plan, placements=False)}", video)
    raise NoFit(f"no placement of the models fits the video in {budget / _GIB:.2f} GiB: with the least on "
                f"the GPU, {fit.describe()}; {estimate.remedy_for(stage)}", video)


class NoFit(LaunchInputError):
    """No placement fits ``video`` (the one that needs the most) in the budget (every process of
    a launch fits the same videos to the same, least, free memory)."""

    def __init__(self, message: str, video: VideoShape) -> None:
        super().__init__(message)
        self.video = video


def fit_memory(
    task: str,
    ckpt_dir: str | Path,
    videos: Sequence[VideoShape],
    budget_gib: float | None = None,
    **options: Any,
) -> MemoryFit:
    """Choose ``load_pipeline``'s ``offload_model``, ``t5_cpu`` and ``stream_blocks`` (those not in
    ``options``, its other keyword arguments, which are kept) for the fastest run on one GPU in
    which each of ``videos`` fits ``budget_gib`` GiB (default: the GPU's free memory less
    ``RESERVED``), as the module's docstring says; loads nothing (seconds: ``check_pipeline``'s
    checks and each video's estimate). ``load_pipeline(task, ckpt_dir, **options, **fit.options)``
    then loads the pipeline so placed. ``InputError`` when nothing fits, with what else would.

    Under ``torchrun`` every process calls it with the same arguments, and each estimate is of
    one process's share (``ulysses_size``, ``dit_fsdp``, ``t5_fsdp``); every process then
    chooses the same placement, fitted to the least free memory of any GPU and machine of the
    launch, the machine's shared by its processes (torchrun's ``LOCAL_WORLD_SIZE``, the most of
    any machine's)."""
    if not isinstance(videos, (list, tuple)):
        raise InputError(f"fit_memory takes a list of the videos to fit (VideoShape), got "
                         f"{type(videos).__name__}: pass [video] for one")
    if not videos:
        raise InputError("fit_memory needs the videos to fit (VideoShape), got none")
    number = isinstance(budget_gib, (int, float)) and not isinstance(budget_gib, bool)
    if budget_gib is not None and not (number and math.isfinite(budget_gib) and budget_gib > 0):
        raise InputError(f"budget_gib must be a number of GiB above 0, got {budget_gib!r}")
    given = {name: options[name] for name in PLACEMENT_FLAGS if name in options}
    if options.get("cuda_graphs"):  # a streamed block's weights would move under its graph
        given = {"stream_blocks": 0, **given}
    most = {"offload_model": False, "t5_cpu": False, "stream_blocks": 0}
    plan = checked_plan("fit_memory", task, ckpt_dir, {**options, **most, **given}, check_fits=False)
    spec = task_spec(task)
    videos = [check_video(spec, video) for video in videos]
    if plan.device.type != "cuda":
        raise InputError(f"fit_memory places the models for a GPU's memory; on {plan.device} every model "
                         "stays in its memory (pass device='cuda')")
    # Processes that share a generation must load alike (a text encoder on the CPU of one alone would
    # give it other prompt encodings), so all of them decide from the same, least, free memory.
    local = local_processes() if plan.options.world > 1 else 1
    measured = from_every_rank((torch.cuda.mem_get_info(plan.device)[0], free_to_check(), local))
    free, host = min(gpu for gpu, *_ in measured), _least([host for _, host, _ in measured])
    gpu = "the GPU" if len(measured) == 1 else f"the fullest of the {len(measured)} processes' GPUs"
    budget = free - RESERVED if budget_gib is None else int(budget_gib * _GIB)
    if budget_gib is None and budget <= 0:
        raise LaunchInputError(f"{gpu} has {free / _GIB:.2f} GiB free, no more than the {RESERVED / _GIB:g} "
                               "GiB the fit keeps in reserve: another process holds its memory (give a "
                               "budget to fit anyway)")
    if budget <= WORKSPACE:
        which = "" if budget_gib is not None else (
            f" ({gpu}'s free memory less the {RESERVED / _GIB:g} GiB reserve)")
        error = InputError if budget_gib is not None else LaunchInputError
        raise error(f"a budget of {budget / _GIB:.2f} GiB{which} holds nothing beside the "
                    f"{WORKSPACE / _GIB:g} GiB each stage keeps for the kernels' workspaces; no placement "
                    "fits in it")
    if budget > free - RESERVED:
        warnings.warn(f"a budget of {budget / _GIB:.2f} GiB is more than the {free / _GIB:.2f} GiB {gpu} "
                      f"has free less the {RESERVED / _GIB:g} GiB reserve: the run may run out of memory",
                      stacklevel=2)
    compiled, ulysses = bool(options.get("compile", False)), options.get("ulysses_size", 1)
    graphs = bool(options.get("cuda_graphs", False))
    estimates = {video: estimate_memory(plan, spec, video, compiled, ulysses, graphs)
                 for video in dict.fromkeys(videos)}
    # The most processes of any machine with the least memory of any: an agreed bound where torchrun
    # starts more processes on some machines than on others.
    return fit_placement(plan, estimates, budget, given, host, max(count for *_, count in measured))


def _least(free: Sequence[FreeMemory | None]) -> FreeMemory | None:
    """The least RAM and the least swap of the machines' ``free`` memory (None where none was
    checked)."""
    counted = [f for f in free if f is not None]
    if not counted:
        return None
    return min(counted, key=lambda f: f.ram)._replace(swap=min(f.swap for f in counted))
