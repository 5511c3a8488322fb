"""Speech features for the S2V DiT: wav2vec2 hidden states bucketed per video frame.

As the official ``AudioEncoder`` (``extract_audio_feat(return_all_layers=True)`` then
``get_audio_embed_bucket_fps(fps=16, batch_frames=infer_frames, m=0)``):

1. the 16 kHz waveform is normalised by the folder's feature extractor and run through wav2vec2
   (transformers' ``Wav2Vec2Model``); every hidden state is kept (embeddings + each layer);
2. the 50 features per second are linearly resampled to 30 per second;
3. video frame i at 16 fps takes the 30 fps feature nearest to its time, ``round(i * 30 / 16)``;
   frames past the audio's end get zeros. Whole clips of ``frames_per_clip`` frames are made, as
   many as the audio starts (``num_clips``), so the last clip is zero-padded.

Decoding audio files (and resampling them to 16 kHz) belongs to the pipeline's I/O.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models.block_numbers import numbered_blocks
from wan_runtime.models.safetensors_checkpoint import read_entries
from wan_runtime.models.torch_archive import check_torch_archive, load_failure

SAMPLE_RATE = 16000
WAV2VEC2_DIR = "wav2vec2-large-xlsr-53-english"
# The weight files transformers reads from the folder, in its order of preference.
WAV2VEC2_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# What transformers reads of the folder besides the weights: the model's and the extractor's.
WAV2VEC2_CONFIGS = ("config.json", "preprocessor_config.json")
# Where the weights' own count cannot be read cheaply (pytorch_model.bin), the most layers a
# config may give: a wav2vec2 has tens.
_MAX_LAYERS = 256
WAV2VEC2_FPS = 50  # one feature per 20 ms (the convolutional front end's stride of 320 samples)
RESAMPLED_FPS = 30
VIDEO_FPS = 16
# The release's wav2vec2 feature encoder (transformers' Wav2Vec2Config defaults, which the tiny
# checkpoints keep): (kernel, stride) of each convolution over the samples.
CONV_LAYERS = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))


def resampled_length(length: int, fps_in: int = WAV2VEC2_FPS, fps_out: int = RESAMPLED_FPS) -> int:
    """Features ``resample_features`` makes of ``length`` features."""
    return int(length / float(fps_in) * fps_out)


def resample_features(features: torch.Tensor, fps_in: int = WAV2VEC2_FPS,
                      fps_out: int = RESAMPLED_FPS) -> torch.Tensor:
    """[N, T, C] -> [N, int(T / fps_in * fps_out), C] by linear interpolation, ends aligned."""
    length = resampled_length(features.size(1), fps_in, fps_out)
    resampled = F.interpolate(features.transpose(1, 2), size=length, mode="linear", align_corners=True)
    return resampled.transpose(1, 2)


def clip_count(features: int, frames_per_clip: int, fps: int = VIDEO_FPS) -> int:
    """Clips of ``frames_per_clip`` video frames that ``features`` features at ``RESAMPLED_FPS``
    start (the last one zero-padded), as the official bucketing counts them."""
    return int(features / (frames_per_clip * (RESAMPLED_FPS / fps))) + 1


def samples_for_features(features: int) -> int:
    """The fewest 16 kHz samples of which wav2vec2 makes ``features`` features (``feature_count``'s
    inverse): the front end's receptive field, then its hop for each further feature."""
    field, hop = 1, 1
    for kernel, stride in CONV_LAYERS:
        field += (kernel - 1) * hop
        hop *= stride
    return field + (features - 1) * hop


def feature_count(samples: int) -> int:
    """wav2vec2 features (``WAV2VEC2_FPS`` a second) of ``samples`` 16 kHz samples (at least 400)."""
    length = samples
    for kernel, stride in CONV_LAYERS:
        length = (length - kernel) // stride + 1
    return length


def speech_clip_count(
    samples: int, frames_per_clip: int, fps: int = VIDEO_FPS, num_clip: int | None = None
) -> int:
    """The clip count ``audio_buckets`` gives for the features of ``samples`` 16 kHz samples (as
    many as ``wan_runtime.audio_io.check_waveform`` accepts), from the feature encoder's geometry
    alone: so the command line knows it without loading wav2vec2. With ``num_clip``, at most
    that many: the clips a run makes."""
    started = clip_count(resampled_length(feature_count(samples)), frames_per_clip, fps)
    return started if num_clip is None else min(started, num_clip)


def audio_buckets(
    features: torch.Tensor, frames_per_clip: int, fps: int = VIDEO_FPS
) -> tuple[torch.Tensor, int]:
    """Per-video-frame features and the number of clips the audio starts.

    ``features`` [layers, T, C] at ``RESAMPLED_FPS``. Returns [1, layers, C, num_clips *
    frames_per_clip] (the DiT's ``audio`` layout; clip r is columns ``r*frames_per_clip`` onwards)
    and ``num_clips``.
    """
    if features.dim() != 3 or features.size(1) == 0:
        raise InputError(f"features must be [layers, T, C] with T > 0, got {list(features.shape)}")
    available = features.size(1)
    num_clips = clip_count(available, frames_per_clip, fps)
    frames = num_clips * frames_per_clip
    # The official sampler's times i / fps, on a 30 fps timeline padded to cover every frame.
    padded_length = math.ceil(frames / fps * RESAMPLED_FPS)
    times = np.linspace(0, frames / fps, frames, endpoint=False)
    index = np.clip(np.round(times * RESAMPLED_FPS).astype(int), 0, padded_length - 1)
    index = torch.from_numpy(index).to(features.device)
    picked = features[:, index.clamp(max=available - 1)]
    picked = torch.where((index < available)[None, :, None], picked, 0.0)
    return picked.permute(0, 2, 1)[None], num_clips


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load report and progress bar off (the load is checked instead)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class Wav2Vec2Features:
    """The checkpoint's wav2vec2 (``<root>/wav2vec2-large-xlsr-53-english``), loaded offline."""

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu") -> None:
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        folder = Path(folder)
        self.check_pretrained(folder)
        try:
            with _quiet_transformers():
                self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
                self.model, info = Wav2Vec2Model.from_pretrained(folder, local_files_only=True,
                                                                 output_loading_info=True)
        except (OSError, ValueError, pickle.UnpicklingError) as err:
            raise CheckpointError(f"{folder}: wav2vec2 does not load ({type(err).__name__}: "
                                  f"{load_failure(err)}); download {WAV2VEC2_DIR}/ of the Wan2.2-S2V-14B "
                                  "release again") from err
        # The release is a CTC model: its lm_head is not used (the official code reads the hidden
        # states); any other difference would leave weights random.
        # Mismatches are (name, stored shape, expected shape).
        wrong = sorted({*info["missing_keys"], *(entry[0] for entry in info["mismatched_keys"])})
        if wrong:
            raise CheckpointError(f"{folder}: wav2vec2 weights missing or mis-shaped: "
                                  f"{', '.join(wrong[:8])}; download {WAV2VEC2_DIR}/ of the release again")
        self.model = self.model.to(device).eval().requires_grad_(False)

    @staticmethod
    def check_pretrained(folder: str | Path) -> None:
        """Check, without reading a weight, that ``folder`` holds the configs and a complete weight
        file: the header of ``model.safetensors``, or the archive of ``pytorch_model.bin`` (the one
        transformers loads). Cheap, so a pipeline runs it before loading any model
        (``CheckpointError``)."""
        folder = Path(folder)
        weights = next((folder / name for name in WAV2VEC2_WEIGHTS if (folder / name).is_file()), None)
        configs = all((folder / name).is_file() for name in WAV2VEC2_CONFIGS)
        if weights is None or not configs:
            raise CheckpointError(
                f"{folder} is not a wav2vec2 folder (it needs config.json, preprocessor_config.json and "
                f"the weights, {' or '.join(WAV2VEC2_WEIGHTS)}); download {WAV2VEC2_DIR}/ of the "
                "Wan2.2-S2V-14B release into it"
            )
        redownload = f"download {WAV2VEC2_DIR}/ again from the Wan2.2-S2V-14B release"
        if weights.suffix == ".safetensors":
            held = numbered_blocks((name.removeprefix("wav2vec2.") for name in read_entries([weights])),
                                   "encoder.layers.")
        else:  # transformers also reads the pickles torch wrote before 1.6
            check_torch_archive(weights, "wav2vec2 weight file", f"download {WAV2VEC2_DIR}/{weights.name} "
                                "again from the Wan2.2-S2V-14B release", legacy_ok=True)
            held = None
        # Before meta_model builds that many layers: the weights' count, else a bound.
        try:
            layers = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("num_hidden_layers")
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError) as err:
            raise CheckpointError(f"{folder / 'config.json'} is not a JSON object ({type(err).__name__}); "
                                  f"{redownload}") from err
        if isinstance(layers, bool) or not isinstance(layers, int) or not 0 < layers <= _MAX_LAYERS \
                or held not in (None, layers):
            weights_hold = "" if held is None else f", and {weights.name} holds {held} layers"
            raise CheckpointError(f"{folder / 'config.json'} gives num_hidden_layers {layers!r}"
                                  f"{weights_hold} (the release's model has 24); {redownload}")

    @staticmethod
    def meta_model(folder: str | Path) -> torch.nn.Module:
        """The model of ``folder``'s config on the meta device, float32 (the release's dtype)."""
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        with _quiet_transformers():
            config = Wav2Vec2Config.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):
            return Wav2Vec2Model(config).float()

    @property
    def num_layers(self) -> int:
        """Hidden states per frame: the embeddings' and each transformer layer's."""
        return self.model.config.num_hidden_layers + 1

    @torch.no_grad()
    def __call__(self, waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Mono 16 kHz samples [S] -> features [layers, T, C] at ``RESAMPLED_FPS``, float32."""
        samples = np.asarray(waveform.cpu() if isinstance(waveform, torch.Tensor) else waveform, np.float32)
        if samples.ndim != 1 or samples.size < 400:
            raise InputError(
                f"the waveform must be mono 16 kHz samples [S] with S >= 400 (25 ms), "
                f"got shape {samples.shape}"
            )
        inputs = self.extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
        out = self.model(inputs.to(self.model.device), output_hidden_states=True)
        return resample_features(torch.cat(out.hidden_states)).float()
