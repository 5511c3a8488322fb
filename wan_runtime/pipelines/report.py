"""``RunReport``: what one ``generate`` call did, with the values it resolved, and how long it took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from wan_runtime.cache.telemetry import branches_of, work_saved

_STAGE_NAMES = {
    "audio_encode": "audio",
    "text_encode": "text",
    "vae_encode": "VAE encode",
    "denoise": "denoise",
    "vae_decode": "VAE decode",
}


@dataclass(frozen=True)
class RunSetup:
    """How a run's numbers were computed, which decides their last bits: on ``device``, the DiTs
    in ``dtype``, on the ``wan_kernels`` backend ``kernels``, the DiT blocks compiled or not."""

    device: str
    dtype: str
    kernels: str
    compile: bool


@dataclass
class RunReport:
    """One run: every argument as used (``None`` defaults resolved, the random seed drawn, the
    default negative prompt filled in), the output ``size`` as ``"W*H"``, seconds per stage in
    ``timings`` (``audio_encode`` for s2v-14B, ``text_encode``, ``vae_encode`` when an image is
    encoded, ``denoise``, ``vae_decode``; s2v-14B's summed over its clips) and the peak
    accelerator memory (``None`` on the CPU): the tensors' (``max_memory_allocated``), or with
    CUDA graphs the allocator's reserve (``max_memory_reserved``), which alone holds the graphs'
    pool while they replay; ``cuda_graphs``: with them, the graphs captured and the replays. For
    s2v-14B ``frame_num`` is the frames made; ``vae_tiling`` is the decode's tile size in pixels
    (0: whole frames). ``step_cache`` is what the step cache did (``Pipeline.cache_report``'s
    telemetry by model; empty without a cache). ``setup``: how the numbers were computed."""

    task: str
    prompt: str
    n_prompt: str
    seed: int
    size: str
    frame_num: int
    sampling_steps: int
    guide_scale: float | tuple[float, float]
    shift: float
    sample_solver: str
    vae_tiling: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    cuda_graphs: tuple[int, int] | None = None
    step_cache: dict[str, dict] = field(default_factory=dict)
    setup: RunSetup | None = None

    def summary(self) -> str:
        """A few lines for a person: what ran, the time per stage, the peak memory."""
        stages = ", ".join(f"{_STAGE_NAMES.get(k, k)} {v:.1f} s" for k, v in self.timings.items())
        total = sum(self.timings.values())
        memory = (
            "peak accelerator memory: n/a (CPU run)"
            if self.peak_memory_bytes is None
            else f"peak accelerator memory: {self.peak_memory_bytes / 2**30:.2f} GiB"
        )
        tiles = f", decoded in {self.vae_tiling}-pixel tiles" if self.vae_tiling else ""
        graphs = [] if self.cuda_graphs is None else [self.graphs_line()]
        cache = [self.step_cache_line()] if self.step_cache else []
        return "\n".join([
            f"{self.task}: {self.size}, {self.frame_num} frames, seed {self.seed}{tiles}",
            f"{self.sampling_steps} steps of {self.sample_solver}, shift {self.shift:g}, "
            f"guide scale {self.guide_scale}",
            f"time: {stages} (total {total:.1f} s)",
            *([] if self.setup is None else [self.setup_line()]),
            memory,
            *graphs,
            *cache,
        ])

    def setup_line(self) -> str:
        """How the numbers were computed, in words (``setup`` set)."""
        s = self.setup
        blocks = "compiled" if s.compile else "eager"
        return f"computed on {s.device} in {s.dtype}, wan_kernels backend {s.kernels}, {blocks} DiT blocks"

    def step_cache_line(self) -> str:
        """The DiT forwards the step cache skipped, per model, with the share of the blocks' work
        that saved (``step_cache`` set): FBCache runs block 0 of a forward it skips."""
        parts = []
        for model, entry in self.step_cache.items():
            branches = branches_of(entry).values()
            skipped = sum(stats["skipped"] for stats in branches)
            steps = sum(stats["steps"] for stats in branches)
            saved = work_saved(branches)
            parts.append(f"{model} {skipped} of {steps} ({saved:.0%} of the blocks' work saved)")
        return "step cache: forwards skipped " + ", ".join(parts)

    def graphs_line(self) -> str:
        """What the CUDA graphs did in words (``cuda_graphs`` set)."""
        captured, replayed = self.cuda_graphs or (0, 0)
        return f"CUDA graphs: {captured} captured, {replayed} replays of the DiT blocks"


class StageOutOfMemory(torch.OutOfMemoryError):
    """Device memory ran out in a stage of a run: ``stage`` is its name in ``RunReport.timings``
    (``vae_decode``, ...), ``stage_name`` as the summary writes it (``VAE decode``)."""

    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.stage_name = _STAGE_NAMES.get(stage, stage)


class StageClock:
    """Wall-clock seconds per named stage; on CUDA it waits for queued kernels before reading
    the clock, so a stage is charged for the work it launched."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timings: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage ``name`` (added to its earlier time, if any); running out of
        device memory in it raises ``StageOutOfMemory`` naming it."""
        self._sync()
        start = time.perf_counter()
        try:
            yield
        except StageOutOfMemory:
            raise
        except torch.OutOfMemoryError as err:
            # Which stage tells what frees memory: the decode's tiles are no help to the DiT.
            raise StageOutOfMemory(str(err), name) from err
        self._sync()
        # Summed over repeats: s2v runs every stage once per clip.
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
