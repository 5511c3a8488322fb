"""What the i2v and ti2v pipelines share: argument resolution, text encoding with the negative
prompt, the denoising loop with classifier-free guidance, decoding, timing and the run report.

A task subclass says how the output size and the latent shape follow from the arguments
(``_plan``), how an input image conditions the run (``_encode_image``) and, for the two-expert
task, which expert and guide scale serve a timestep (``_expert``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.distributed.fsdp import FSDPModule
from tqdm import tqdm

import wan_kernels
from wan_runtime.cache import CacheConfig, CacheManager, WanStages
from wan_runtime.checks import check_frame_num, check_vae_tiling
from wan_runtime.distributed.launch import shared_seed
from wan_runtime.errors import InputError
from wan_runtime.image_io import CheckedImage, load_image
from wan_runtime.models import TextEncoder, WanModel, WanVAE
from wan_runtime.models.cuda_graphs import StageGraphs
from wan_runtime.pipelines.activation_memory import MemoryEstimate, VideoShape, estimate_memory
from wan_runtime.pipelines.inputs import (
    check_guide_scale,
    check_prompt,
    parse_size,
    resolve_seed,
)
from wan_runtime.pipelines.memory_plan import WeightPlan
from wan_runtime.pipelines.numerics import FiniteWatch, check_video, remedy
from wan_runtime.pipelines.report import RunReport, RunSetup, StageClock
from wan_runtime.pipelines.residency import Residency
from wan_runtime.pipelines.step_events import StepCallback, StepReporter
from wan_runtime.solvers import FlowSolver, make_solver
from wan_runtime.tasks import TaskSpec

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

TEXT_ENCODER = "text_encoder"


@dataclass(frozen=True)
class Plan:
    """The geometry of one run, fixed before any model runs: output pixels and frames, latent
    shape ``(channels, frames, height, width)``; ``image`` is the input image, already loaded."""

    width: int
    height: int
    frame_num: int
    latent_shape: tuple[int, int, int, int]
    image: Image.Image | None


@dataclass(frozen=True)
class ImageCondition:
    """How an encoded input image enters the denoising: ``y`` [1, C, F, h, w] concatenated to the
    DiT input (i2v), or ``first_frame`` [C, 1, h, w], a latent frame held fixed at timestep 0 (ti2v)."""

    y: torch.Tensor | None = None
    first_frame: torch.Tensor | None = None


@dataclass(frozen=True)
class Prompts:
    """The encoded prompt and negative prompt, [1, L, text_dim] each, on the pipeline's device."""

    context: torch.Tensor
    context_null: torch.Tensor


@dataclass(frozen=True)
class Settings:
    """The checked arguments every task shares, defaults resolved; ``width`` x ``height`` is the
    output size or, with an image, the target area; ``vae_tiling`` the decode's tile size in
    pixels (0: whole frames)."""

    prompt: str
    n_prompt: str
    width: int
    height: int
    steps: int
    shift: float
    sample_solver: str
    guide: float | tuple[float, float]
    vae_tiling: int

    def new_solver(self, device: torch.device) -> FlowSolver:
        """A fresh solver for one sampling run."""
        return make_solver(self.sample_solver, self.steps, self.shift, device)

    def report(
        self, task: str, seed: int, width: int, height: int, frame_num: int, clock: StageClock,
        peak_memory: int | None, cuda_graphs: tuple[int, int] | None, step_cache: dict[str, dict],
        setup: RunSetup,
    ) -> RunReport:
        """The run report of a finished run with these settings, computed as ``setup`` says."""
        return RunReport(
            task=task, prompt=self.prompt, n_prompt=self.n_prompt, seed=seed, size=f"{width}*{height}",
            frame_num=frame_num, sampling_steps=self.steps, guide_scale=self.guide, shift=self.shift,
            sample_solver=self.sample_solver, vae_tiling=self.vae_tiling, timings=clock.timings,
            peak_memory_bytes=peak_memory, cuda_graphs=cuda_graphs, step_cache=step_cache, setup=setup,
        )

    def decode(self, vae: WanVAE, latent: torch.Tensor) -> torch.Tensor:
        """``latent`` [C, T, h, w] decoded to pixels, in tiles when ``vae_tiling`` asks for them."""
        return vae.decode_latent(latent, self.vae_tiling)


class Pipeline:
    """A loaded task: ``generate`` turns a prompt (and an image) into a video; build one with
    ``wan_runtime.pipelines.load_pipeline``.

    ``task`` is the task name, ``fps`` the frame rate the task's videos play at, ``last_report``
    the ``RunReport`` of the latest ``generate`` (None before the first).
    """

    # How the step cache drives this task's DiT.
    stages_class: ClassVar[type[WanStages]] = WanStages

    def __init__(
        self,
        spec: TaskSpec,
        device: torch.device,
        text_encoder: TextEncoder,
        vae: WanVAE,
        dits: dict[str, WanModel],
        residency: Residency,
    ) -> None:
        self.spec = spec
        self.task = spec.name
        self.fps = spec.fps
        self.device = device
        self.text_encoder = text_encoder
        self.vae = vae
        self.dits = dits
        # The names the step cache knows each DiT by (the task's models, not the dict keys).
        self.cache_names = dict(zip(dits, spec.cache_models, strict=True))
        self.residency = residency
        self.last_report: RunReport | None = None
        self._cache_report: dict[str, dict] = {}
        # What its weights take of the device's memory, as ``load_pipeline`` planned it.
        self.weight_plan: WeightPlan | None = None

    @property
    def stage_graphs(self) -> StageGraphs | None:
        """The CUDA graphs the DiTs replay their blocks from (``cuda_graphs``; one ``StageGraphs``
        for them all), which the pipeline releases when they will not replay again; None without."""
        graphs = {id(dit.stage_graphs): dit.stage_graphs for dit in self.dits.values()
                  if dit.stage_graphs is not None}
        if len(graphs) > 1:
            raise InputError("the DiTs of a pipeline replay from one StageGraphs; give each DiT's "
                             "enable_cuda_graphs the same one")
        return next(iter(graphs.values()), None)

    # -- what a task defines ------------------------------------------------------------------

    @staticmethod
    def output_size(spec: TaskSpec, image: Image.Image | CheckedImage | None, width: int,
                    height: int) -> tuple[int, int]:
        """The video's (width, height) for the target ``width*height`` and the input ``image``;
        ``InputError`` when the image cannot fit. Needs no model, so a caller can check a request
        before loading one."""
        raise NotImplementedError

    def _plan(self, image: Image.Image | None, width: int, height: int, frame_num: int) -> Plan:
        raise NotImplementedError

    def _encode_image(self, plan: Plan) -> ImageCondition:
        raise NotImplementedError

    def _expert(self, t: float, guide_scale: float | tuple[float, float]) -> tuple[str, float]:
        """The DiT (by name) and the guide scale for timestep ``t``: the one DiT by default."""
        (name,) = self.dits
        return name, guide_scale

    # -- the run --------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        image: Image.Image | CheckedImage | str | Path | None = None,
        size: str | None = None,
        frame_num: int | None = None,
        sampling_steps: int | None = None,
        guide_scale: float | tuple[float, float] | None = None,
        shift: float | None = None,
        sample_solver: str = "unipc",
        seed: int = -1,
        n_prompt: str = "",
        progress: bool = True,
        cache: CacheConfig | None = None,
        on_step: StepCallback | None = None,
        vae_tiling: bool | int = False,
    ) -> torch.Tensor:
        """Generate a video [3, frame_num, H, W], float32 in [-1, 1], on the pipeline's device.

        ``None`` arguments take the task's official defaults. ``size`` is ``"W*H"``: the output
        size for ti2v-5B without an image, else the target area, the image's aspect ratio giving
        the shape. ``guide_scale`` for i2v-A14B is one number or ``(low_noise, high_noise)``; at
        a scale of 1 a step runs the conditional branch alone (the guidance would cancel the other).
        ``seed`` -1 draws a random seed; ``n_prompt`` "" uses the official negative prompt. Every
        argument is checked (``InputError``) before any model runs. ``last_report`` then holds
        the resolved arguments and the timings. ``cache`` turns on the step cache (see
        ``wan_runtime.cache.CacheConfig``); ``cache_report()`` then returns its telemetry.
        ``on_step`` is called with a ``StepEvent`` after each sampling step (an exception it
        raises stops the run); ``progress`` shows a progress bar. ``vae_tiling`` decodes the
        video in overlapping tiles, ``True`` of 512 pixels or of the size given (a multiple of
        64; 0 as ``False``: whole frames): about half the decode's memory, and frames that differ
        from the whole frames' decode (each tile's decoder sees only its tile).
        """
        settings = self._settings(prompt, n_prompt, size, sampling_steps, guide_scale, shift, sample_solver,
                                  cache, vae_tiling)
        reporter = StepReporter(progress, on_step)
        frame_num = check_frame_num(self.spec.frame_num if frame_num is None else frame_num, self.spec)
        solver, guide = settings.new_solver(self.device), settings.guide
        width, height = settings.width, settings.height
        plan = self._plan(None if image is None else load_image(image), width, height, frame_num)
        seed = self._resolve_seed(seed)

        self._start_run()
        clock = StageClock(self.device)
        graphs = self._graph_counts()
        with torch.inference_mode(), self.residency.released_after():
            generator = torch.Generator(device=self.device).manual_seed(seed)
            noise = torch.randn(
                plan.latent_shape, dtype=torch.float32, generator=generator, device=self.device
            )
            with clock.stage("text_encode"):
                prompts = self._encode_text(settings.prompt, settings.n_prompt)
            condition = ImageCondition()
            if plan.image is not None:
                with clock.stage("vae_encode"):
                    condition = self._encode_image(plan)
            with clock.stage("denoise"):
                latent = self._denoise(noise, prompts, solver, guide, condition, reporter, cache)
                self.residency.release()
            with clock.stage("vae_decode"):
                video = settings.decode(self.vae, latent)
            check_video(video, self.vae.dtype)
        self.last_report = settings.report(self.task, seed, plan.width, plan.height, frame_num, clock,
                                           self._peak_memory(), self._graph_counts(graphs),
                                           self._cache_report, self._run_setup())
        # A normal tensor, not an inference tensor, so that callers may modify it in place.
        return video.clone()

    def estimate_memory(
        self,
        image: Image.Image | CheckedImage | str | Path | None = None,
        size: str | None = None,
        frame_num: int | None = None,
        guide_scale: float | tuple[float, float] | None = None,
        vae_tiling: bool | int = False,
        cache: CacheConfig | None = None,
    ) -> MemoryEstimate:
        """The device memory ``generate`` with these arguments would take at its peak, at least,
        stage by stage (``wan_runtime.pipelines.activation_memory``): worked out on the meta
        device, in seconds, without running a model. Arguments as ``generate``'s, checked alike.
        A pipeline split over processes (``ulysses_size``, ``dit_fsdp``, ``t5_fsdp``) counts this
        process's shares: of the weights, of the tokens and of the VAE's rows (the band of the
        process that holds the most)."""
        spec = self.spec
        width, height = parse_size(spec.default_size if size is None else size, spec)
        frame_num = check_frame_num(spec.frame_num if frame_num is None else frame_num, spec)
        plan = self._plan(None if image is None else load_image(image), width, height, frame_num)
        guide = check_guide_scale(spec.guide_scale if guide_scale is None else guide_scale, spec)
        video = VideoShape(plan.width, plan.height, frame_num, plan.image is not None, guide,
                           check_vae_tiling(vae_tiling, "vae_tiling"), cache=self._step_cache(cache))
        return self._estimate(video)

    def _estimate(self, video: VideoShape) -> MemoryEstimate:
        if self.weight_plan is None:
            raise InputError("estimate_memory needs the memory plan load_pipeline gives a pipeline; "
                             "build the pipeline with wan_runtime.pipelines.load_pipeline")
        compiled = any(dit.blocks_compiled for dit in self.dits.values())
        parallel = next(iter(self.dits.values())).sequence_parallel
        return estimate_memory(self.weight_plan, self.spec, video, compiled,
                               1 if parallel is None else parallel.world, self.stage_graphs is not None)

    def _settings(
        self,
        prompt: str,
        n_prompt: str,
        size: str | None,
        sampling_steps: int | None,
        guide_scale: float | tuple[float, float] | None,
        shift: float | None,
        sample_solver: str,
        cache: CacheConfig | None,
        vae_tiling: object,
    ) -> Settings:
        """The arguments every task shares, checked (``InputError``), ``None`` as the task's default."""
        spec = self.spec
        prompt = check_prompt(prompt, "prompt")
        n_prompt = check_prompt(n_prompt, "n_prompt") or spec.negative_prompt
        width, height = parse_size(spec.default_size if size is None else size, spec)
        steps = spec.sampling_steps if sampling_steps is None else sampling_steps
        shift = spec.shift if shift is None else shift
        make_solver(sample_solver, steps, shift)  # refuses a bad solver, step count or shift now
        guide = check_guide_scale(spec.guide_scale if guide_scale is None else guide_scale, spec)
        self._step_cache(cache)
        return Settings(prompt, n_prompt, width, height, int(steps), float(shift), sample_solver, guide,
                        check_vae_tiling(vae_tiling, "vae_tiling"))

    def _step_cache(self, cache: object) -> CacheConfig | None:
        """``cache`` checked (``InputError``): the step cache if one is on, else None."""
        if cache is not None and not isinstance(cache, CacheConfig):
            raise InputError(f"cache must be a wan_runtime.cache.CacheConfig or None, got {cache!r}")
        if cache is None or not cache.enabled:
            return None
        cache.check_models(self.spec.cache_models)
        return cache

    def cache_report(self) -> dict[str, dict]:
        """The step cache's telemetry of the latest ``generate``, by model name (``high``,
        ``low``, ``ti2v``): per branch (``cond``, ``uncond``) ``steps``, ``computed``, ``skipped``,
        ``forced`` and the details of ``BranchStats.as_dict``, and ``residual_bytes``. Empty when
        that run had no cache."""
        return self._cache_report

    @property
    def distributed(self) -> bool:
        """Whether the run is split over a process group (``load_pipeline``'s ``ulysses_size``,
        ``dit_fsdp``, ``t5_fsdp``), whose processes must then agree on the seed and the cache's
        decisions."""
        sharded = any(isinstance(m, FSDPModule) for m in (*self.dits.values(), self.text_encoder.model))
        return sharded or any(dit.sequence_parallel is not None for dit in self.dits.values())

    def _resolve_seed(self, seed: int) -> int:
        """``resolve_seed``; rank 0's in a distributed run, as the official script broadcasts it
        (a random seed drawn by each process would differ)."""
        seed = resolve_seed(seed)
        return shared_seed(seed) if self.distributed else seed

    def _run_setup(self) -> RunSetup:
        """``RunReport.setup`` of this pipeline's runs."""
        compiled = any(dit.blocks_compiled for dit in self.dits.values())
        return RunSetup(str(self.device), str(self._dtype).removeprefix("torch."),
                        wan_kernels.backend_for(self.device), compiled)

    @property
    def _dtype(self) -> torch.dtype:
        """The DiTs' compute dtype."""
        return next(iter(self.dits.values())).patch_embedding.weight.dtype

    def _describe(self, name: str) -> str:
        """The DiT ``name`` as a numerical failure's message names it."""
        backend = wan_kernels.backend_for(self.device)
        weights = " with float8 weights" if self.dits[name].weights_fp8 else ""
        return f"model {self.cache_names[name]!r}, {self._dtype}{weights}, wan_kernels backend {backend!r}"

    def _remedy(self, cache: CacheConfig | None) -> str:
        """What to try after a numerical failure of this pipeline's run with ``cache``."""
        cache_on = cache is not None and cache.enabled
        compiled = any(dit.blocks_compiled for dit in self.dits.values())
        fp8 = any(dit.weights_fp8 for dit in self.dits.values())
        loras = any(dit.lora_changes for dit in self.dits.values())
        return remedy(wan_kernels.backend_for(self.device), cache_on, self._dtype, compiled, fp8, loras)

    def _start_run(self) -> None:
        """Forget the previous run's reports (a run that stops has none) and count this run's peak
        from here (``_peak_memory``)."""
        self.last_report, self._cache_report = None, {}
        if self.device.type != "cuda":
            return
        if self.stage_graphs is not None:
            # Reserved memory counts: what the allocator still keeps of the previous run goes
            # back first, or a batch's later videos would report it as theirs.
            torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)

    def _peak_memory(self) -> int | None:
        if self.device.type != "cuda":
            return None
        # A replay allocates nothing: its pool's memory counts as reserved, not allocated.
        graphed = self.stage_graphs is not None
        return (torch.cuda.max_memory_reserved if graphed else torch.cuda.max_memory_allocated)(self.device)

    def _graph_counts(self, since: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """The CUDA graphs captured and the replays (since the counts ``since``), or None without
        graphs."""
        if self.stage_graphs is None:
            return None
        captured, replayed = since or (0, 0)
        return self.stage_graphs.captures - captured, self.stage_graphs.replays - replayed

    def _encode_text(self, prompt: str, n_prompt: str) -> Prompts:
        """Both prompts, encoded one at a time as the official pipelines do (a batch of two
        would pad the shorter one and change its encoding's arithmetic)."""
        encoder = self.text_encoder
        if TEXT_ENCODER in self.residency.placement:
            self.residency.activate(TEXT_ENCODER)
        context, context_null = (
            encoder.encode([text])[0][None].to(self.device) for text in (prompt, n_prompt)
        )
        self._release_gathered(encoder.model)
        # When offloading, the encoder leaves the accelerator before the VAE encodes.
        self.residency.release()
        return Prompts(context, context_null)

    @staticmethod
    def _release_gathered(model: torch.nn.Module) -> None:
        """Free what FSDP keeps gathered of a sharded ``model`` after its work: its top unit's
        weights (the text encoder's embedding table, 2 GB in umT5-XXL; the DiT's embeddings after
        the stages a step cache runs one by one), so that they count only while it works
        (``memory_plan.sharded``)."""
        if isinstance(model, FSDPModule):
            model.reshard()

    def _denoise(
        self,
        noise: torch.Tensor,
        prompts: Prompts,
        solver: FlowSolver,
        guide: float | tuple[float, float],
        condition: ImageCondition,
        reporter: StepReporter,
        cache: CacheConfig | None = None,
    ) -> torch.Tensor:
        """Run every solver step from ``noise`` [C, F, h, w] with classifier-free guidance; the
        final latent. Without an enabled ``cache`` each branch is the plain DiT forward."""
        first = condition.first_frame
        latent = noise if first is None else torch.cat([first, noise[:, 1:]], dim=1)
        timesteps = solver.timesteps
        per_token = None if first is None else self._moving_tokens(latent)
        expert_names = len(self.dits) > 1
        steps = timesteps.tolist()
        manager = self._cache_manager(cache, steps, guide)
        watch = FiniteWatch(latent.device)
        with self._loop_graphs(), reporter.steps(len(steps), self.task, show_model=expert_names) as done:
            for i, t in enumerate(steps):
                name, scale = self._expert(t, guide)
                if self.stage_graphs is not None and i and name != self._expert(steps[i - 1], guide)[0]:
                    self.stage_graphs.release()  # the other expert's graphs never replay again
                model = self.residency.activate(name)
                if manager is not None and self.residency.offload:
                    manager.release_finished(i)  # not copied to the CPU to be dropped there
                    self._place_cache(manager)
                # ti2v with an image: the tokens of the fixed first frame are at timestep 0.
                timestep = timesteps[i : i + 1] if per_token is None else per_token * timesteps[i]
                x = latent[None]
                # At scale 1 guidance gives the conditional prediction: the official run's
                # uncond + 1 * (cond - uncond) differs from it by float rounding alone, so the
                # unconditional forward (half the step) is left out.
                branches = [("cond", prompts.context)]
                if scale != 1:
                    branches.append(("uncond", prompts.context_null))
                flows = [(model(x, timestep, context, condition.y) if manager is None else
                          manager.forward(i, branch, x, timestep, context, condition.y))[0]
                         for branch, context in branches]
                self._release_gathered(model)
                flow = flows[0] if len(flows) == 1 else flows[1] + scale * (flows[0] - flows[1])
                latent = solver.step(flow, t, latent)
                if first is not None:
                    latent = torch.cat([first, latent[:, 1:]], dim=1)
                watch.observe(i, latent)
                done(i, t, name, latent)
        self._cache_report = {} if manager is None else manager.finish()
        watch.check(len(steps), lambda step: self._describe(self._expert(steps[step], guide)[0]),
                    lambda: self._remedy(cache))
        return latent

    @contextmanager
    def _loop_graphs(self) -> Iterator[None]:
        """The DiTs' CUDA graphs serve one denoising loop: after it their memory is the VAE's, and
        an offloaded expert's graphs would read weights that have moved."""
        try:
            yield
        finally:
            if self.stage_graphs is not None:
                self.stage_graphs.release()

    def _cache_manager(
        self, cache: CacheConfig | None, timesteps: list[float], guide: float | tuple[float, float],
        notice: bool = True,
    ) -> CacheManager | None:
        """The run's cache manager over the DiTs under their cache names, or None when off;
        ``notice`` as ``CacheManager``'s."""
        if cache is None or not cache.enabled:
            return None
        schedule = [self.cache_names[self._expert(t, guide)[0]] for t in timesteps]
        models = {self.cache_names[name]: self.stages_class(dit) for name, dit in self.dits.items()}
        return CacheManager(cache, models, schedule, timesteps, log=tqdm.write, notice=notice,
                            shared=self.distributed)

    def _place_cache(self, manager: CacheManager) -> None:
        """Cached residuals follow their expert: on the device with it, else on the CPU."""
        for name in self.dits:
            where = self.device if self.residency.placement[name] == "device" else torch.device("cpu")
            manager.move(self.cache_names[name], where)

    def _moving_tokens(self, latent: torch.Tensor) -> torch.Tensor:
        """[1, L] int64: 0 for the DiT tokens of the first latent frame, 1 for the others."""
        _, frames, height, width = latent.shape
        p_t, p_h, p_w = self.spec.patch_size
        per_frame = (height // p_h) * (width // p_w)
        mask = torch.ones(1, frames // p_t * per_frame, dtype=torch.int64, device=latent.device)
        mask[:, :per_frame] = 0
        return mask
