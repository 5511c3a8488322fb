"""How much device memory one video takes at its peak, weights and activations, before it runs.

Each stage of the run does its work on meta-device tensors of the video's sizes, through the
models' own code, while ``live_bytes`` counts the tensors alive at once: the VAE encoding the
input image (i2v-A14B: and the black frames after it; s2v-14B: the reference image, the motion
context and the pose video), each DiT's forward for each guidance branch (the conditional
prediction kept while the unconditional one runs; each prompt's encoding at its shortest, one
token), and the VAE decode of the latent (in tiles with ``vae_tiling``). For s2v-14B the clip
counted is one with the motion's tokens in the DiT and its latent frames before the clip's in the
decode, when the video has such a clip, the motion context's frames held beside both; a clip
leaves the device once decoded. Added to the weights on the device at every moment of that
stage (``WeightPlan.weights_while``; under FSDP the least it keeps gathered while a model works,
wherever the activations peak), the largest sum is the peak; under FSDP a stage's peak may also
be the most weights it gathers at once (``StagePeak.working``), no activation counted beside
them. The text encoder's
stage counts its weights alone: its activations at 512 tokens are a few tens of MB beside 11 GB
of weights, and it builds its attention mask from the tokens' values, which the meta device
does not have. The speech encoder's stage counts wav2vec2 on ``audio_samples`` samples (0.74
GiB for a minute), when the video gives them.

With a step cache (``VideoShape.cache``) a DiT's step is a computed step after another, run
through the run's ``CacheManager``: each branch holds what the step before cached for it (TeaCache's
or FBCache's float32 residual of the tokens: 1.4 GiB per branch at i2v-A14B's 720p) until it
captures its own. With the blocks replayed from CUDA graphs (``cuda_graphs``) a DiT's step also
holds the graphs' input and output buffers, and what the blocks allocate comes from the graphs'
pool, which keeps the most it held apart from the rest of the step (``live_bytes.pooled``).

It is a lower bound of ``torch.cuda.max_memory_allocated`` (with CUDA graphs, of
``max_memory_reserved``, which alone counts the pool while the graphs replay): left out are the
kernels' workspaces (cuDNN's convolutions above all: on an H100 the bf16 VAE decode at 720p
allocated 1.2-1.5x the tensors counted here), the tensors one stage hands the next (the prompts'
encodings, the image's latent), the solver's past predictions (latent-sized: tens of MB at 720p)
and what the allocator reserves beyond what it hands out. DiT blocks compiled by
``torch.compile`` are counted eager: their fused kernels may hold less, so those stages are no
bound. Under ``torchrun`` it is one process's run: its share of the weights (the plan's) and,
with ``ulysses`` above 1, the DiT's activations of its slice of the tokens, with the buffers the
exchanges around attention make (``SequenceParallel.planned``); and, when the processes share
the generation (``ulysses`` above 1, or the plan's FSDP), the VAE's encodes and decodes of its
band of the rows, with the rows its neighbours lend and the gathered results
(``RowSplit.planned``: the process whose band holds the most).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch

from wan_runtime.cache import CacheConfig, CacheManager, S2VStages, WanStages
from wan_runtime.checks import (
    VAE_TILE_MULTIPLE,
    check_frame_num,
    check_infer_frames,
    check_num_clip,
    check_switch,
    check_vae_tiling,
    is_int,
)
from wan_runtime.distributed.row_split import RowSplit
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.errors import InputError
from wan_runtime.models import WanModel, WanVAE
from wan_runtime.models.audio_encoder import resample_features, speech_clip_count
from wan_runtime.models.cuda_graphs import RerunBackend, StageGraphs
from wan_runtime.models.s2v_dit import MOTION_FRAMES, WanModelS2V
from wan_runtime.models.vae_loading import codec
from wan_runtime.pipelines.inputs import check_guide_scale, expert_scale
from wan_runtime.pipelines.live_bytes import peak_bytes, pooled
from wan_runtime.pipelines.memory_advice import Step, graphable, say, tiling_step, token_steps, video_steps
from wan_runtime.pipelines.memory_plan import (
    _GIB,
    AUDIO_ENCODER,
    TEXT_ENCODER,
    VAE,
    WeightPlan,
    dit_label,
    is_dit,
)
from wan_runtime.tasks import DIT, TaskSpec

_META = torch.device("meta")
_BRANCHES = ("cond", "uncond")  # the guidance branches, in the order a step runs them


class StagePeak(NamedTuple):
    """A stage of the run (named as the run report's timings name it), the model working in it
    (the ``WeightPlan``'s name), the weights on the device meanwhile and the stage's activations
    at their most, in bytes; ``bound``: whether the run holds at least those (not for DiT blocks
    compiled by ``torch.compile``, whose fused kernels may leave out tensors the eager count has);
    ``own``: the working model's part of ``weights``; ``working``: the most weights on the device
    at once while the model works, no activation counted beside them (under FSDP more than
    ``weights``, those kept beside the activations' peak; None: no more)."""

    stage: str
    model: str
    weights: int
    activations: int
    bound: bool = True
    own: int = 0
    working: int | None = None

    @property
    def gathering(self) -> bool:
        """Whether the stage's peak is the weights FSDP gathers while the model works (more than
        the weights beside the activations' peak and those activations)."""
        return self.working is not None and self.working > self.weights + self.activations

    @property
    def total(self) -> int:
        """The stage's peak: each of its two moments is held at some time of the stage."""
        return self.working if self.gathering else self.weights + self.activations

    @property
    def sure(self) -> bool:
        """Whether the run holds at least ``total``: ``bound``, or weights make it, which no
        compiled kernel lowers."""
        return self.bound or self.gathering


@dataclass(frozen=True)
class MemoryEstimate:
    """Each stage's ``StagePeak`` of one video on ``device``. What lowers a stage's peak
    (``remedy_for``) draws on what lowers the weights on the device while its model works
    (``weight_steps``, by the model's name: the ``WeightPlan``'s ``steps_while``), the decode's
    tile size (``vae_tiling``), the option of the frame count (``frames_option``) and what lowers
    the DiT's activations (``token_steps``: splitting the tokens over processes, or
    the CUDA graphs' copies); ``cuda_graphs``: the DiT blocks replay from CUDA graphs, which rule
    some weights' steps out (``memory_advice.graphable``)."""

    device: torch.device
    stages: tuple[StagePeak, ...]
    weight_steps: Mapping[str, tuple[Step, ...]]
    vae_tiling: int = 0
    frames_option: str = "frame_num"
    token_steps: tuple[Step, ...] = ()
    cuda_graphs: bool = False

    @property
    def busiest(self) -> StagePeak:
        """The stage of the peak (the first of those that tie)."""
        return max(self.stages, key=lambda stage: stage.total)

    @property
    def peak(self) -> int:
        """The most bytes on the device at once (at least that, when ``busiest.sure``)."""
        return self.busiest.total

    @property
    def busiest_bound(self) -> StagePeak | None:
        """The stage of the most bytes the run surely holds at once (None: no stage is a bound)."""
        bounds = [stage for stage in self.stages if stage.sure]
        return max(bounds, key=lambda stage: stage.total, default=None)

    @property
    def lower_bound(self) -> int:
        """The most bytes the run surely holds at once: the peak of the stages that are bounds."""
        stage = self.busiest_bound
        return 0 if stage is None else stage.total

    @property
    def remedy(self) -> str:
        """What lowers the peak."""
        return self.remedy_for(self.busiest)

    def describe(self, stage: StagePeak | None = None) -> str:
        """The peak (or ``stage``'s) and what makes it, in words."""
        stage = stage or self.busiest
        amount = "at least" if stage.sure else "about (counted eager: the compiled blocks may hold less)"
        if stage.gathering:
            extra = (stage.working - stage.weights) / _GIB
            what = (f"weights, {extra:.2f} GiB of them blocks FSDP gathers beside the one the {stage.model} "
                    "computes, no activations counted")
        else:
            what = (f"{stage.weights / _GIB:.2f} GiB of weights, {stage.activations / _GIB:.2f} GiB of "
                    f"activations of the {stage.model}")
        return (f"{amount} {stage.total / _GIB:.2f} GiB of {self.device} memory at the peak, in the "
                f"{stage.stage} ({what})")

    def remedy_for(self, stage: StagePeak, flags: bool = False) -> str:
        """What lowers ``stage``'s bytes, naming the command line's flags (``flags``) or the
        arguments: for the decode, tiles (smaller tiles); a smaller video or fewer frames; and
        what lowers the weights, first when they are the larger part (alone when FSDP's gathered
        weights make the peak)."""
        own = self.weight_steps.get(stage.model, ())
        weights = graphable(own) if self.cuda_graphs else list(own)
        if stage.gathering:  # weights alone: no smaller video or split lowers them
            return say(weights, flags)
        tiles = tiling_step(self.vae_tiling) if stage.stage == "vae_decode" else None
        steps = [tiles] if tiles else []
        steps += [*self.token_steps] if stage.stage == "denoise" else []
        steps += video_steps(self.frames_option)
        position = 0 if stage.weights > stage.activations else len(steps)
        steps[position:position] = weights
        return say(steps, flags)

    def placed(self, plan: WeightPlan) -> MemoryEstimate:
        """The same video with the models placed as ``plan`` places them (``WeightPlan.placed``):
        each stage's activations and the weights on the device meanwhile under ``plan``; a model
        ``plan`` keeps off the device (the text encoder under ``t5_cpu``) works off it, and its
        stage is left out."""
        stages = tuple(
            stage._replace(weights=plan.weights_while(stage.model, computing=True),
                           own=plan.models[stage.model].while_computing,
                           working=plan.weights_while(stage.model))
            for stage in self.stages if stage.model in plan.models
        )
        return dataclasses.replace(self, stages=stages, weight_steps=_weight_steps(plan))


@dataclass(frozen=True)
class VideoShape:
    """What sizes a video's activations: its ``width`` x ``height`` in pixels (the output size,
    resolved), ``frame_num`` frames, whether an input ``image`` conditions it, the guide scale
    (one, or i2v-A14B's ``(low_noise, high_noise)``; at 1 a step runs one branch) and the decode's
    tiles (``vae_tiling`` pixels, 0: whole frames). For s2v-14B ``frame_num`` is the frames of a
    clip (``infer_frames``), ``clips`` their number, ``start_from_ref`` and ``pose`` as its
    ``generate`` takes them (the reference image is always there), ``audio_samples`` the speech's
    16 kHz samples (0: not known, the speech encoder's activations not counted), ``motion_frames``
    the motion context's (pixel, latent) frames (the release's; ``S2VPipeline.motion_frames``);
    ``cache`` the step cache, if one is on (its tensors kept between steps count in the DiTs')."""

    width: int
    height: int
    frame_num: int
    image: bool
    guide: float | tuple[float, float]
    vae_tiling: int = 0
    clips: int = 1
    start_from_ref: bool = False
    pose: bool = False
    audio_samples: int = 0
    motion_frames: tuple[int, int] = MOTION_FRAMES
    cache: CacheConfig | None = None


def speech_video(
    width: int, height: int, infer_frames: int, guide: float, vae_tiling: int, samples: int,
    num_clip: int | None, start_from_ref: bool, pose: bool, fps: int,
    motion_frames: tuple[int, int] = MOTION_FRAMES, cache: CacheConfig | None = None,
) -> VideoShape:
    """An s2v-14B video's ``VideoShape``: as many clips as ``samples`` of speech start (at most
    ``num_clip``), the other arguments as ``generate``'s, checked."""
    clips = speech_clip_count(samples, infer_frames, fps, num_clip)
    return VideoShape(width, height, infer_frames, image=True, guide=guide, vae_tiling=vae_tiling,
                      clips=clips, start_from_ref=start_from_ref, pose=pose, audio_samples=samples,
                      motion_frames=motion_frames, cache=cache)


def estimate_memory(
    plan: WeightPlan, spec: TaskSpec, video: VideoShape, compiled: bool = False, ulysses: int = 1,
    cuda_graphs: bool = False,
) -> MemoryEstimate:
    """The peak of ``video``'s run with the models of ``plan`` (``load_pipeline``'s; under
    ``torchrun``, the first process's, the tokens split over ``ulysses`` processes, the VAE's rows
    as the process holding the most splits them), stage by
    stage, as the module's docstring says; a second or so for a release DiT, several for a tiled
    decode at 720p (the meta device runs the ops of each kind of tile, at most 9 whatever their
    count, and of the whole frames' decode, to warn of tiles that take no less). ``video`` is
    checked first (``check_video``). ``compiled``: the DiT blocks run
    compiled (``compile``), so their stages are counted eager and are no bound. ``cuda_graphs``:
    the DiT blocks replay from CUDA graphs (``cuda_graphs``), whose input and output buffers and
    pool the DiT steps then hold too."""
    world = plan.options.world
    if ulysses not in (1, world):
        raise ValueError(f"ulysses {ulysses}: the tokens split over 1 or all {world} processes of the plan")
    models = plan.meta_models
    _check_plan(spec, [model for label, model in models.items() if is_dit(label)])
    video = check_video(spec, video)
    vae = codec(models[VAE])
    if plan.options.shared(ulysses):
        vae.row_split = RowSplit.planned(world)
    names = list(spec.dit_names)
    dits: dict[str, WanModel] = {name: models[dit_label(name, names)] for name in names}
    config = next(iter(dits.values())).config
    stride_t, stride_h, stride_w = spec.vae_stride
    frames = (video.frame_num - 1) // stride_t + 1 if spec.audio_dir is None else video.frame_num // stride_t
    latent_shape = (config.out_dim, frames, video.height // stride_h, video.width // stride_w)

    stages = []
    if AUDIO_ENCODER in plan.models:
        samples = video.audio_samples
        stages.append(("audio_encode", AUDIO_ENCODER,
                       peak_bytes(speech_work, models[AUDIO_ENCODER], samples) if samples else 0))
    if TEXT_ENCODER in plan.models:
        stages.append(("text_encode", TEXT_ENCODER, 0))
    run = _s2v_activations if spec.audio_dir is not None else _activations
    caches = {name: None if video.cache is None else StepCache(video.cache, cache_name)
              for name, cache_name in zip(names, spec.cache_models, strict=True)}
    with _dits_as_run(dits.values(), ulysses, cuda_graphs):
        stages += run(vae, dits, latent_shape, video, caches)
    peaks = [StagePeak(stage, model, plan.weights_while(model, computing=True), bytes_,
                       not (compiled and stage == "denoise"), plan.models[model].while_computing,
                       plan.weights_while(model))
             for stage, model, bytes_ in stages]
    frames_option = "frame_num" if spec.audio_dir is None else "infer_frames"
    return MemoryEstimate(plan.device, tuple(peaks), _weight_steps(plan), video.vae_tiling,
                          frames_option, tuple(token_steps(world, ulysses, config.num_heads, cuda_graphs)),
                          cuda_graphs)


def _weight_steps(plan: WeightPlan) -> dict[str, tuple[Step, ...]]:
    """What lowers the weights on the device while each of ``plan``'s models works, by its name."""
    return {name: tuple(plan.steps_while(name)) for name in plan.models}


def _check_plan(spec: TaskSpec, dits: list[WanModel]) -> None:
    """``InputError`` for a plan of other DiTs than ``spec``'s task runs."""
    if len(dits) != len(spec.dit_names) or any(dit.config.model_type != spec.model_type for dit in dits):
        kinds = sorted({dit.config.model_type for dit in dits})
        raise InputError(f"estimate_memory: the plan holds {len(dits)} {'/'.join(kinds)} DiT(s), not the "
                         f"{spec.name} ones; pass the task_spec of the task check_pipeline was given")


def check_video(spec: TaskSpec, video: object) -> VideoShape:
    """``video``, a ``VideoShape`` of ``spec``'s task, checked as ``generate`` checks its arguments
    (``InputError`` naming the field), before the meta device runs a stage on it; returned with
    the guide scale and the tile size resolved as ``generate`` resolves them (i2v-A14B's one
    scale as a pair, ``vae_tiling=True`` as 512)."""
    if not isinstance(video, VideoShape):
        raise InputError(f"a video must be a VideoShape, got {type(video).__name__}")
    if spec.audio_dir is None:
        check_frame_num(video.frame_num, spec, "VideoShape.")
    else:
        check_infer_frames(video.frame_num, "VideoShape.frame_num (s2v-14B's frames a clip, infer_frames)")
    multiple = spec.vae_stride[1] * spec.patch_size[1]
    for name in ("width", "height"):
        value = getattr(video, name)
        if not is_int(value) or value < multiple or value % multiple:
            raise InputError(f"VideoShape.{name} must be a positive multiple of {multiple} for {spec.name} "
                             f"(its VAE's and patches' stride), got {value!r}")
    check_switch(video.image, "VideoShape.image")
    if spec.model_type != "ti2v" and not video.image:  # ti2v-5B alone may run without one
        raise InputError(f"VideoShape.image must be True for {spec.name}, which starts from an image")
    guide = check_guide_scale(video.guide, spec, "VideoShape.guide")
    tiling = check_vae_tiling(video.vae_tiling, "VideoShape.vae_tiling")
    if spec.audio_dir is not None:
        check_num_clip(video.clips, "VideoShape.clips", optional=False)
        check_switch(video.start_from_ref, "VideoShape.start_from_ref")
        check_switch(video.pose, "VideoShape.pose")
        if not is_int(video.audio_samples) or video.audio_samples < 0:
            raise InputError("VideoShape.audio_samples must be the speech's count of 16 kHz samples (0: not "
                             f"known), got {video.audio_samples!r}")
        motion = video.motion_frames
        if not (isinstance(motion, tuple) and len(motion) == 2 and all(is_int(n) and n > 0 for n in motion)):
            raise InputError("VideoShape.motion_frames must be the motion context's (pixel, latent) frame "
                             f"counts, positive (the release's: {MOTION_FRAMES}), got {motion!r}")
    return dataclasses.replace(video, guide=guide, vae_tiling=tiling)


class _PooledRerun(RerunBackend):
    """``RerunBackend`` whose replays allocate from the graphs' pool, as ``LiveBytes`` counts it."""

    def capture(self, work: Callable[[], None]) -> Callable[[], None]:
        def replay() -> None:
            with pooled():
                work()

        return replay


@contextmanager
def _dits_as_run(dits: Iterable[WanModel], ulysses: int, cuda_graphs: bool) -> Iterator[None]:
    """The (meta) ``dits`` splitting their tokens over ``ulysses`` processes
    (``SequenceParallel.planned``: the first process's share) and, with ``cuda_graphs``, replaying
    their blocks from graphs of their own (their buffers allocated in the DiT's own stage), while
    inside; as they were after."""
    dits = list(dits)
    before = [(dit.sequence_parallel, dit.stage_graphs) for dit in dits]
    try:
        for dit in dits:
            if ulysses > 1:
                dit.enable_sequence_parallel(SequenceParallel.planned(ulysses))
            if cuda_graphs:
                # Captured at once, so that the one step of each kind the estimate runs holds them.
                dit.enable_cuda_graphs(StageGraphs(_PooledRerun(), capture_at_first_call=True))
        yield
    finally:
        for dit, (parallel, graphs) in zip(dits, before, strict=True):
            dit.sequence_parallel, dit.stage_graphs = parallel, graphs


def _activations(
    vae: WanVAE, dits: dict[str, WanModel], latent_shape: tuple[int, ...], video: VideoShape,
    caches: dict[str, StepCache | None],
) -> list[tuple[str, str, int]]:
    """i2v-A14B's and ti2v-5B's stages after the text: (stage, model, activations), each DiT's
    with its step cache (``caches``, by DiT name)."""
    config = next(iter(dits.values())).config
    names = list(dits)
    stages = []
    if video.image:
        encoded = video.frame_num if config.in_dim > config.out_dim else 1
        stages.append(("vae_encode", VAE, peak_bytes(encode_work, vae, encoded, video.height, video.width)))
    for name, dit in dits.items():
        branches = 1 if expert_scale(video.guide, name) == 1 else 2
        per_token = video.image and config.in_dim == config.out_dim
        step = peak_bytes(step_work, dit, latent_shape, branches, per_token, cache=caches[name])
        stages.append(("denoise", dit_label(name, names), step))
    stages.append(("vae_decode", VAE, _decode_bytes(decode_work, vae, latent_shape, video)))
    return stages


def _s2v_activations(
    vae: WanVAE, dits: dict[str, WanModelS2V], latent_shape: tuple[int, ...], video: VideoShape,
    caches: dict[str, StepCache | None],
) -> list[tuple[str, str, int]]:
    """s2v-14B's stages after the text: the encodes of the reference image, the motion context and
    the pose video, a clip's DiT forwards and decode. A clip after the first (or the first with
    ``start_from_ref``) carries the motion: its tokens in the DiT, its latent frames before the
    clip's in the decode; the estimate takes that clip when there is one."""
    ((name, dit),) = dits.items()
    motion = video.clips > 1 or video.start_from_ref
    pose_frames = video.frame_num + 1 if video.pose else 0
    dtype = dit.patch_embedding.weight.dtype
    # The motion context's frames stay on the device through the clip: in the DiT's dtype until a
    # clip's frames join them, in float32 after (the first encode, of the DiT's dtype, is the larger).
    first = (video.motion_frames[0], video.height, video.width, dtype)
    context = (*first[:3], torch.float32 if video.clips > 1 else dtype)
    encode = peak_bytes(s2v_encode_work, vae, pose_frames, first)
    branches = 1 if video.guide <= 1 else 2
    step = peak_bytes(s2v_step_work, dit, latent_shape, video.frame_num, branches, motion, video.pose,
                      context, video.motion_frames, cache=caches[name])
    behind = video.motion_frames[1] if motion else 1
    decoded = (latent_shape[0], behind + latent_shape[1], *latent_shape[2:])
    decode = _decode_bytes(s2v_decode_work, vae, decoded, video, context)
    return [("vae_encode", VAE, encode), ("denoise", dit_label(DIT, [DIT]), step),
            ("vae_decode", VAE, decode)]


def _decode_bytes(
    work: Callable[..., None], vae: WanVAE, latent_shape: tuple[int, ...], video: VideoShape, *context: object
) -> int:
    """The activations of ``work`` (``decode_work``, or ``s2v_decode_work`` with its ``context``),
    decoding a latent of ``latent_shape`` in ``video``'s tiles; a warning when whole frames take
    no more, as tiles nearly the frame's size do (the blend's frame-sized buffers come on top of a
    tile's decode)."""
    tiled = peak_bytes(work, vae, latent_shape, video.vae_tiling, *context)
    if not video.vae_tiling:
        return tiled
    whole = peak_bytes(work, vae, latent_shape, 0, *context)
    if tiled >= whole:
        # Halved from the frame's size at most: a larger tile decodes the frame whole.
        frame = max(video.width, video.height) // VAE_TILE_MULTIPLE * VAE_TILE_MULTIPLE
        smaller = tiling_step(min(video.vae_tiling, frame))
        instead = "" if smaller is None else f"try {smaller.say(flags=False)} or "
        warnings.warn(f"vae_tiling {video.vae_tiling}: decoding the {video.width}x{video.height} frames in "
                      f"tiles of that size takes {tiled / _GIB:.2f} GiB of activations, no less than the "
                      f"{whole / _GIB:.2f} GiB whole frames take; {instead}leave vae_tiling out",
                      stacklevel=2)
    return tiled


def encode_work(vae: WanVAE, frames: int, height: int, width: int, device: torch.device = _META) -> None:
    """The VAE encode of ``frames`` frames of ``height`` x ``width`` pixels, made on ``device``."""
    vae.encode([torch.zeros(3, frames, height, width, device=device)])


def _text(dit: WanModel, branches: int, device: torch.device) -> list[torch.Tensor]:
    """Each branch's prompt encoding at its shortest, one token (the DiT pads it to ``text_len``
    itself), in the text encoder's dtype (bfloat16 unless the DiT computes in float32)."""
    dtype = torch.float32 if dit.patch_embedding.weight.dtype == torch.float32 else torch.bfloat16
    return [torch.zeros(1, 1, dit.config.text_dim, dtype=dtype, device=device) for _ in range(branches)]


class StepCache(NamedTuple):
    """A step cache's settings and the name it knows the DiT by (``TaskSpec.cache_models``)."""

    config: CacheConfig
    name: str


def _forwards(dit: WanModel, inputs: list[tuple], cache: StepCache | None) -> None:
    """The DiT's forward of each guidance branch's ``inputs`` (cond, then uncond), each branch's
    prediction kept until the step's last; with a step ``cache``, a computed step after another,
    through the run's ``CacheManager``: each branch holds the tensors the step before cached for
    it until it captures its own."""
    if cache is None:
        flows = [dit(*args) for args in inputs]
        del flows
        return
    stages = S2VStages(dit) if isinstance(dit, WanModelS2V) else WanStages(dit)
    # Two managers, each at its first step, which computes without a metric (a later step's would
    # read values the meta device does not have); the first's tensors stand for the step before.
    before, later = (CacheManager(cache.config, {cache.name: stages}, [cache.name], [999.0],
                                  log=lambda line: None, notice=False) for _ in range(2))
    branches = list(zip(_BRANCHES, inputs, strict=False))
    flows = [before.forward(0, branch, *args) for branch, args in branches]
    del flows
    flows = []
    for branch, args in branches:
        before.forget(cache.name, branch, signal_only=True)
        flows.append(later.forward(0, branch, *args))
        before.forget(cache.name, branch)
    del flows


def step_work(
    dit: WanModel, latent_shape: tuple[int, ...], branches: int, per_token: bool,
    device: torch.device = _META, cache: StepCache | None = None,
) -> None:
    """A sampling step's DiT forwards, one per guidance branch, on inputs made on ``device``: the
    i2v conditioning ``y`` beside the latent when the DiT takes more channels than it predicts,
    one timestep per token (ti2v-5B's fixed first frame at 0) with ``per_token``; with the step
    ``cache``'s tensors (``_forwards``)."""
    config = dit.config
    x = torch.zeros(1, *latent_shape, device=device)
    extra = config.in_dim - config.out_dim
    y = torch.zeros(1, extra, *latent_shape[1:], device=device) if extra else None
    patch_t, patch_h, patch_w = config.patch_size
    tokens = latent_shape[1] // patch_t * (latent_shape[2] // patch_h) * (latent_shape[3] // patch_w)
    t = torch.full((1, tokens) if per_token else (1,), 999.0, device=device)
    if per_token:
        t[:, : tokens // (latent_shape[1] // patch_t)] = 0
    contexts = _text(dit, branches, device)
    # The first step makes the rope tables the model then keeps: they count, as in a run.
    dit.forget_rope_tables()
    _forwards(dit, [(x, t, context, y) for context in contexts], cache)


def speech_work(model: torch.nn.Module, samples: int, device: torch.device = _META) -> None:
    """wav2vec2's features of ``samples`` samples, made on ``device``, resampled as the pipeline's."""
    hidden = model(torch.zeros(1, samples, device=device), output_hidden_states=True).hidden_states
    resample_features(torch.cat(hidden)).float()


def s2v_encode_work(
    vae: WanVAE, pose_frames: int, context: tuple[int, int, int, torch.dtype], device: torch.device = _META
) -> None:
    """s2v-14B's encodes, made on ``device``: the reference image (its latent kept), the motion
    context's frames (``context``: their count, height, width and dtype; encoded in float32) and
    ``pose_frames`` of a pose video (in the context's dtype)."""
    _, height, width, dtype = context
    reference = vae.encode([torch.zeros(3, 1, height, width, device=device)])
    frames = _context_frames(context, device)
    vae.encode([frames.float()])
    if pose_frames:
        vae.encode([torch.zeros(3, pose_frames, height, width, dtype=dtype, device=device)])
    del reference, frames


def _context_frames(context: tuple[int, int, int, torch.dtype], device: torch.device) -> torch.Tensor:
    """s2v-14B's motion context of ``context`` (frames, height, width, dtype)."""
    frames, height, width, dtype = context
    return torch.zeros(3, frames, height, width, dtype=dtype, device=device)


def s2v_step_work(
    dit: WanModelS2V, latent_shape: tuple[int, ...], columns: int, branches: int, motion: bool, pose: bool,
    context: tuple[int, int, int, torch.dtype], motion_frames: tuple[int, int], device: torch.device = _META,
    cache: StepCache | None = None,
) -> None:
    """A sampling step of an s2v-14B clip, made on ``device``: the latent, the reference and motion
    latents (``motion_frames[1]``; the motion's tokens with ``motion``), the clip's ``columns``
    audio columns (one per video frame; silence for the unconditional branch), the pose latents
    with ``pose``, beside the motion context's frames (``context``); with the step ``cache``'s
    tensors (``_forwards``)."""
    config = dit.config
    channels, frames, height, width = latent_shape
    dtype = dit.patch_embedding.weight.dtype
    held = _context_frames(context, device)
    x = torch.zeros(1, *latent_shape, device=device)
    t = torch.full((1,), 999.0, device=device)
    reference = torch.zeros(1, channels, 1, height, width, device=device)
    motion_latents = torch.zeros(1, channels, motion_frames[1], height, width, device=device)
    audio = [torch.zeros(1, config.audio_layers, config.audio_dim, columns, dtype=dtype, device=device)
             for _ in range(branches)]
    poses = torch.zeros(1, config.cond_dim, frames, height, width, device=device) if pose else None
    contexts = _text(dit, branches, device)
    dit.forget_rope_tables()
    _forwards(dit, [(x, t, text, reference, motion_latents, sound, poses, motion_frames, not motion)
                    for text, sound in zip(contexts, audio, strict=True)], cache)
    del held


def s2v_decode_work(
    vae: WanVAE, latent_shape: tuple[int, ...], vae_tiling: int, context: tuple[int, int, int, torch.dtype],
    device: torch.device = _META,
) -> None:
    """An s2v-14B clip's decode (its latent behind the motion's or the reference's) beside the
    motion context's frames, made on ``device``."""
    held = _context_frames(context, device)
    decode_work(vae, latent_shape, vae_tiling, device)
    del held


def decode_work(
    vae: WanVAE, latent_shape: tuple[int, ...], vae_tiling: int, device: torch.device = _META
) -> None:
    """The decode of a latent of ``latent_shape``, made on ``device``, as the pipeline decodes."""
    vae.decode_latent(torch.zeros(*latent_shape, device=device), vae_tiling)
