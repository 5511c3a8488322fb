"""s2v-14B: speech (and a reference image and a prompt) to video, as the official ``WanS2V.generate``.

The speech is encoded once by wav2vec2 and bucketed per output frame at 16 fps; the video is then
made clip by clip, ``infer_frames`` frames each, as many clips as the audio starts (at most
``num_clip``). Every clip is a full denoising run with its own noise (seed ``seed + clip``), the
reference image's latent and the latents of the last 73 frames made so far (the motion context,
black before the first clip) as clean conditioning tokens, and the clip's audio columns; the
unconditional branch takes the negative prompt and silent (zero) audio. A clip is decoded behind
its motion context, and its frames become the next clip's context.

The first clip has no motion context (``drop_first_motion``): it is decoded behind the reference
latent and its first 3 frames are dropped. ``start_from_ref`` instead puts the reference image in
the last 6 context frames and keeps the motion tokens from the first clip on.

A pose video, read at 16 fps from its start (``pipelines.pose``), conditions each clip with the
VAE latents of its frames (frames of -1 past the video's end), embedded and added to the noisy
video tokens. Without one every clip takes the official "no pose" input, zero latents, whose
embedding is the pose encoder's bias.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from tqdm import tqdm

from wan_runtime.audio_io import check_waveform, decode_audio
from wan_runtime.cache import CacheConfig, S2VStages
from wan_runtime.cache.telemetry import merge_reports, summary_lines
from wan_runtime.checks import check_clip_seeds, check_vae_tiling
from wan_runtime.errors import InputError
from wan_runtime.image_io import CheckedImage, load_image
from wan_runtime.models.audio_encoder import audio_buckets, speech_clip_count
from wan_runtime.models.s2v_dit import MOTION_FRAMES
from wan_runtime.pipelines.activation_memory import MemoryEstimate, speech_video
from wan_runtime.pipelines.base import Pipeline, Prompts
from wan_runtime.pipelines.inputs import check_clip_arguments, check_guide_scale, parse_size
from wan_runtime.pipelines.numerics import FiniteWatch, check_video
from wan_runtime.pipelines.pose import pose_clips
from wan_runtime.pipelines.report import StageClock
from wan_runtime.pipelines.resolution import image_to_tensor, resize_short_side_and_crop, s2v_output_size
from wan_runtime.pipelines.step_events import StepCallback, StepReporter
from wan_runtime.pose_video import VideoInfo, probe_video
from wan_runtime.tasks import DIT

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from wan_runtime.models import TextEncoder, WanVAE
    from wan_runtime.models.audio_encoder import Wav2Vec2Features
    from wan_runtime.models.s2v_dit import WanModelS2V
    from wan_runtime.pipelines.residency import Residency
    from wan_runtime.solvers import FlowSolver
    from wan_runtime.tasks import TaskSpec

AUDIO_ENCODER = "audio_encoder"
LATENT_CHANNELS = 16
# The first clip, decoded behind the one reference latent frame, starts with 3 frames that
# belong to that frame's decoding: the official pipeline drops them.
FIRST_CLIP_DROPPED_FRAMES = 3
# ``start_from_ref``: the reference image fills the last 6 frames of the initial motion context.
REF_CONTEXT_FRAMES = 6


def frames_made(clips: int, infer_frames: int, start_from_ref: bool) -> int:
    """The frames ``S2VPipeline.generate`` returns for ``clips`` clips of ``infer_frames``."""
    return clips * infer_frames - (0 if start_from_ref else FIRST_CLIP_DROPPED_FRAMES)


class S2VPipeline(Pipeline):
    """The s2v-14B task: ``dits`` holds its one DiT, ``audio_encoder`` the release's wav2vec2."""

    stages_class = S2VStages

    def __init__(
        self,
        spec: TaskSpec,
        device: torch.device,
        text_encoder: TextEncoder,
        vae: WanVAE,
        dits: dict[str, WanModelS2V],
        residency: Residency,
        audio_encoder: Wav2Vec2Features,
    ) -> None:
        super().__init__(spec, device, text_encoder, vae, dits, residency)
        self.audio_encoder = audio_encoder
        # The motion context (pixel frames, latent frames): the release's (73, 19), which its DiT
        # was trained with; a smaller context only serves fast tests of the clip logic.
        self.motion_frames: tuple[int, int] = MOTION_FRAMES
        self.clip_cache_reports: list[dict[str, dict]] = []

    def generate(  # type: ignore[override]  # s2v takes audio and clip arguments, no frame_num
        self,
        prompt: str,
        image: Image.Image | CheckedImage | str | Path | None = None,
        audio: str | Path | torch.Tensor | np.ndarray | None = None,
        num_clip: int | None = None,
        infer_frames: int = 80,
        pose_video: str | Path | None = None,
        start_from_ref: bool = False,
        size: str | None = None,
        sampling_steps: int | None = None,
        guide_scale: float | None = None,
        shift: float | None = None,
        sample_solver: str = "unipc",
        seed: int = -1,
        n_prompt: str = "",
        progress: bool = True,
        cache: CacheConfig | None = None,
        on_step: StepCallback | None = None,
        vae_tiling: bool | int = False,
    ) -> torch.Tensor:
        """Generate a talking video [3, frames, H, W], float32 in [-1, 1], on the CPU (as the official
        pipeline gathers it: each clip leaves the device once decoded).

        ``image`` is the reference image (PIL or path); ``audio`` the speech: an audio file any
        ffmpeg decodes, or mono samples [S] at 16 kHz. ``size`` ``"W*H"`` is the target area; the
        output keeps the image's aspect ratio, padded to multiples of 64. The video has
        ``infer_frames`` (a multiple of 4, at most 4096) frames per clip, 3 fewer in the first unless
        ``start_from_ref``; clips follow the audio's length, at most ``num_clip`` (None: all).
        ``pose_video`` (a video file ffmpeg decodes) drives the motion: every ``round(fps / 16)``-th
        frame from its first, resized and centre-cropped to the output, ``infer_frames`` per clip
        (frames of -1 past its end). Other arguments as ``Pipeline.generate``'s, which has a
        ``frame_num`` this one has not: the speech sets the length. Every one is checked
        (``InputError``), the pose video's first frame decoded, before any model runs.
        ``cache_report()`` gives the step cache's telemetry over all clips,
        ``clip_cache_reports`` that of each clip. ``on_step``'s events count the steps of each
        clip and name the clip.
        """
        settings = self._settings(prompt, n_prompt, size, sampling_steps, guide_scale, shift, sample_solver,
                                  cache, vae_tiling)
        reporter = StepReporter(progress, on_step)
        picture, waveform, pose_info = self._inputs(image, audio, num_clip, infer_frames, pose_video,
                                                    start_from_ref)
        width, height = self.output_size(self.spec, picture, settings.width, settings.height)
        seed = self._resolve_seed(seed)
        check_clip_seeds(seed, speech_clip_count(waveform.shape[-1], infer_frames, self.fps, num_clip),
                         "seed")

        self._start_run()
        clock = StageClock(self.device)
        graphs = self._graph_counts()
        # Published when the run ends: a stopped run leaves none, as it leaves no last_report.
        self.clip_cache_reports, clip_reports = [], []
        with torch.inference_mode(), self.residency.released_after():
            with clock.stage("audio_encode"):
                self.residency.activate(AUDIO_ENCODER)
                columns, available = audio_buckets(self.audio_encoder(waveform), infer_frames, self.fps)
                self.residency.release()
            clips = available if num_clip is None else min(num_clip, available)
            with clock.stage("text_encode"):
                prompts = self._encode_text(settings.prompt, settings.n_prompt)
            with clock.stage("vae_encode"):
                reference = image_to_tensor(resize_short_side_and_crop(picture, height, width))[:, None]
                reference = reference.to(self.device)
                ref_latent = self.vae.encode([reference])[0][None]
                # Held in the DiT's dtype, as the official pipeline holds it (it rounds the image).
                context_frames = torch.zeros(3, self.motion_frames[0], height, width, device=self.device,
                                             dtype=self._dtype)
                if start_from_ref:
                    context_frames[:, -REF_CONTEXT_FRAMES:] = reference
                motion = self.vae.encode([context_frames.float()])[0][None]
                poses = None if pose_info is None else self._pose_latents(pose_video, pose_info, clips,
                                                                          infer_frames, height, width)
            out = []
            for clip in range(clips):
                drop_motion = clip == 0 and not start_from_ref
                generator = torch.Generator(device=self.device).manual_seed(seed + clip)
                # Drawn in the DiT's dtype, as the official noise.
                noise = torch.randn(LATENT_CHANNELS, infer_frames // self.spec.vae_stride[0],
                                    height // self.spec.vae_stride[1], width // self.spec.vae_stride[2],
                                    dtype=self._dtype, generator=generator, device=self.device).float()
                # Cast to the DiT's dtype as the official pipeline casts the features.
                audio_clip = columns[..., clip * infer_frames:(clip + 1) * infer_frames]
                pose = None if poses is None else poses[clip].to(self.device)
                inputs = _ClipInputs(ref_latent, motion, audio_clip.to(self.device, self._dtype), pose,
                                     drop_motion)
                with clock.stage("denoise"):
                    solver = settings.new_solver(self.device)
                    latent, report = self._denoise_clip(noise, prompts, solver, settings.guide, inputs,
                                                        reporter, cache, clip, clips)
                    clip_reports.append(report)
                    self.residency.release()
                with clock.stage("vae_decode"):
                    behind = ref_latent if drop_motion else motion
                    frames = settings.decode(self.vae, torch.cat([behind[0], latent], dim=1))
                    frames = frames[:, -infer_frames:]
                    if drop_motion:
                        frames = frames[:, FIRST_CLIP_DROPPED_FRAMES:]
                # Each clip leaves the device once decoded, as in the official pipeline: a minute of
                # 720p video is 10 GB of float32.
                out.append(frames.cpu())
                if clip + 1 < clips:
                    with clock.stage("vae_encode"):
                        kept = min(self.motion_frames[0], frames.shape[1])
                        context_frames = torch.cat([context_frames[:, kept:].float(), frames[:, -kept:]], 1)
                        motion = self.vae.encode([context_frames])[0][None]
                # A view of the whole decode, the motion's frames too: gone before the next clip.
                del frames
            video = torch.cat(out, dim=1)
            check_video(video, self.vae.dtype)
        self.clip_cache_reports = clip_reports
        self._cache_report = merge_reports(clip_reports)
        self.last_report = settings.report(self.task, seed, width, height, video.shape[1], clock,
                                           self._peak_memory(), self._graph_counts(graphs),
                                           self._cache_report, self._run_setup())
        for line in summary_lines(self._cache_report):  # one line per model for the whole run
            tqdm.write(line)
        # A normal tensor, not an inference tensor, so that callers may modify it in place.
        return video.clone()

    def estimate_memory(  # type: ignore[override]  # s2v takes audio and clip arguments, no frame_num
        self,
        image: Image.Image | CheckedImage | str | Path | None = None,
        audio: str | Path | torch.Tensor | np.ndarray | None = None,
        num_clip: int | None = None,
        infer_frames: int = 80,
        pose_video: str | Path | None = None,
        start_from_ref: bool = False,
        size: str | None = None,
        guide_scale: float | None = None,
        vae_tiling: bool | int = False,
        cache: CacheConfig | None = None,
    ) -> MemoryEstimate:
        """The device memory ``generate`` with these arguments would take at its peak, at least,
        stage by stage (``wan_runtime.pipelines.activation_memory``), of a clip with the motion's
        tokens when the video has one: worked out on the meta device, in seconds. Arguments as
        ``generate``'s, checked alike; the speech gives the clip count and the speech encoder's
        input."""
        picture, waveform, _ = self._inputs(image, audio, num_clip, infer_frames, pose_video, start_from_ref)
        spec = self.spec
        area = parse_size(spec.default_size if size is None else size, spec)
        width, height = self.output_size(spec, picture, *area)
        guide = check_guide_scale(spec.guide_scale if guide_scale is None else guide_scale, spec)
        video = speech_video(width, height, infer_frames, guide, check_vae_tiling(vae_tiling, "vae_tiling"),
                             waveform.size, num_clip, start_from_ref, pose_video is not None, self.fps,
                             self.motion_frames, self._step_cache(cache))
        return self._estimate(video)

    @staticmethod
    def _inputs(
        image: Image.Image | CheckedImage | str | Path | None,
        audio: str | Path | torch.Tensor | np.ndarray | None,
        num_clip: int | None, infer_frames: int, pose_video: str | Path | None, start_from_ref: bool,
    ) -> tuple[Image.Image, np.ndarray, VideoInfo | None]:
        """The checked clip arguments' reference image, loaded, speech samples, decoded, and the
        pose video's first frame decoded and its geometry (None: no pose video)."""
        check_clip_arguments(infer_frames, num_clip, start_from_ref, pose_video)
        if image is None:
            raise InputError("s2v-14B needs a reference image: pass image= a PIL image or a file path")
        picture = load_image(image)
        if audio is None:
            raise InputError("s2v-14B is driven by speech: pass audio= an audio file or 16 kHz samples")
        waveform = decode_audio(audio) if isinstance(audio, (str, Path)) else check_waveform(audio)
        return picture, waveform, None if pose_video is None else probe_video(pose_video)

    @staticmethod
    def output_size(spec: TaskSpec, image: Image.Image | CheckedImage | None, width: int,
                    height: int) -> tuple[int, int]:
        if image is None:
            raise InputError("s2v-14B needs a reference image: pass image= a PIL image or a file path")
        fit_h, fit_w = s2v_output_size(image.height, image.width, width * height)
        return fit_w, fit_h

    def _pose_latents(self, path: str | Path, video: VideoInfo, clips: int, infer_frames: int, height: int,
                      width: int) -> list[torch.Tensor]:
        """Each clip's pose latents [1, C, infer_frames / 4, h, w], float32 on the CPU (small; the
        official pipeline keeps them there too). Every clip's frames are cast to the DiT's dtype and
        encoded behind a copy of their first frame, whose latent is dropped, as the official."""
        latents = []
        for frames in pose_clips(path, video, clips, infer_frames, height, width, self.fps):
            latent = self.vae.encode([frames.to(self.device, self._dtype)])[0][:, 1:]
            latents.append(latent[None].cpu())
        return latents

    def _denoise_clip(
        self,
        noise: torch.Tensor,
        prompts: Prompts,
        solver: FlowSolver,
        guide: float,
        inputs: _ClipInputs,
        reporter: StepReporter,
        cache: CacheConfig | None,
        clip: int,
        clips: int,
    ) -> tuple[torch.Tensor, dict[str, dict]]:
        """One clip's solver steps from ``noise`` [C, F, h, w]; the final latent and the step
        cache's report (empty without one). The unconditional branch runs only when ``guide > 1``,
        as in the official pipeline."""
        latent = noise
        timesteps = solver.timesteps
        manager = self._cache_manager(cache, timesteps.tolist(), guide, notice=clip == 0)
        watch = FiniteWatch(latent.device)
        silent = torch.zeros_like(inputs.audio)
        desc = f"{self.task} clip {clip + 1}/{clips}"
        with self._loop_graphs(), reporter.steps(len(timesteps), desc, clip=clip + 1, clips=clips) as done:
            for i, t in enumerate(timesteps.tolist()):
                model = self.residency.activate(DIT)
                if manager is not None and self.residency.offload:
                    self._place_cache(manager)
                branches = [("cond", prompts.context, inputs.audio)]
                if guide > 1:
                    branches.append(("uncond", prompts.context_null, silent))
                flows = []
                for branch, context, audio in branches:
                    args = (latent[None], timesteps[i:i + 1], context, inputs.ref_latent, inputs.motion,
                            audio, inputs.pose, self.motion_frames, inputs.drop_motion)
                    flow = model(*args) if manager is None else manager.forward(i, branch, *args)
                    flows.append(flow[0])
                self._release_gathered(model)
                flow = flows[0] if len(flows) == 1 else flows[1] + guide * (flows[0] - flows[1])
                latent = solver.step(flow, t, latent)
                watch.observe(i, latent)
                done(i, t, DIT, latent)
        report = {} if manager is None else manager.finish(summary=False)
        watch.check(len(timesteps), lambda _: f"clip {clip + 1} of {clips}, {self._describe(DIT)}",
                    lambda: self._remedy(cache))
        return latent, report


class _ClipInputs(NamedTuple):
    """What conditions one clip besides the text: reference and motion latents [1, C, T, h, w],
    the clip's audio columns [1, layers, C, infer_frames], its pose latents [1, C, F, h, w] (None:
    no pose) and whether the motion tokens are left out."""

    ref_latent: torch.Tensor
    motion: torch.Tensor
    audio: torch.Tensor
    pose: torch.Tensor | None
    drop_motion: bool
