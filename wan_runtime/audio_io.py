"""Reading speech for s2v-14B: any audio file ffmpeg decodes, as mono 16 kHz float32 samples.

The official pipeline reads audio with ``librosa.load(path, sr=16000)``; here the bundled ffmpeg of
``imageio-ffmpeg`` decodes, downmixes and resamples instead, so that no audio library is needed.
A 16 kHz mono file decodes to the same samples; other rates go through ffmpeg's resampler rather
than librosa's, which differ by a fraction of a percent of the signal.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from wan_runtime.errors import InputError
from wan_runtime.input_files import require_file
from wan_runtime.models.audio_encoder import SAMPLE_RATE, samples_for_features

# The shortest speech the official pipeline makes a clip of (720 samples, 45 ms): the 30 fps
# resampling needs two wav2vec2 features to make one.
MIN_SAMPLES = samples_for_features(2)
# The longest speech decoded: an hour, 230 MB of samples (720 clips of the official 80 frames).
MAX_SECONDS = 3600


def heard_frames(samples: int, fps: int) -> int:
    """The frames at ``fps`` that ``samples`` of 16 kHz speech span: those begun before it ends."""
    return -(-samples * fps // SAMPLE_RATE)


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_path(path: str | Path) -> str:
    """``path`` as ffmpeg must be given it: absolute. ffmpeg reads a relative name with a colon
    (``take:1.wav``) as a protocol and one starting with a dash as an option; from ``/`` it reads
    neither."""
    return str(Path(path).absolute())


def decode_audio(path: str | Path, label: str = "audio") -> np.ndarray:
    """The audio of file ``path`` as mono float32 samples [S] at 16 kHz (channels averaged).

    Raises ``InputError`` naming ``label`` for a missing file, one ffmpeg cannot decode, or one
    without sound.
    """
    path = require_file(path, label, "a WAV, MP3, FLAC or other audio file")
    # Channels are kept and averaged here, as librosa downmixes (ffmpeg's ``-ac 1`` weights them
    # by layout). A WAV stream on the pipe carries the channel count in its header.
    # Decoded no further than just past the longest speech taken: a tiny file of a low sample rate
    # resamples to hours of 16 kHz samples, gigabytes, before any length is known.
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", ffmpeg_path(path), "-vn", "-map", "0:a:0",
               "-t", str(MAX_SECONDS + 1), "-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", "-f", "wav", "-"]
    stdout, stderr, code = _decoded(command)
    if stdout is None:
        raise InputError(f"{label} {path} holds more sound than the runtime decodes, an hour of stereo (its "
                         "channels count each); cut it or mix it down to mono (e.g. ffmpeg -i IN -ac 1 -t "
                         f"{MAX_SECONDS} OUT.wav)")
    if code != 0:
        reason = " ".join(stderr.decode(errors="replace").split())[-300:] or "no reason given"
        # What ffmpeg says of a file without sound (e.g. a silent video) is about our ``-map``.
        if "matches no streams" in reason:
            raise InputError(
                f"{label} {path} has no audio stream; pass a WAV, MP3 or FLAC file, or a video with sound"
            )
        raise InputError(
            f"{label} {path} cannot be decoded by ffmpeg ({reason}); pass a WAV, MP3 or FLAC file"
        )
    channels, samples = _read_wav_stream(stdout)
    samples = samples[: samples.size // channels * channels].reshape(-1, channels).mean(axis=1)
    if samples.size > MAX_SECONDS * SAMPLE_RATE:
        raise InputError(f"{label} {path} is longer than {MAX_SECONDS // 60} minutes, the longest speech the "
                         f"runtime takes; cut it (e.g. ffmpeg -i IN -t {MAX_SECONDS} OUT.wav)")
    return check_waveform(samples, f"{label} {path}")


# The most decoded bytes read from ffmpeg: the longest speech in stereo float32, and a header.
_MAX_BYTES = (MAX_SECONDS + 1) * SAMPLE_RATE * 4 * 2 + 4096


def _decoded(command: list[str]) -> tuple[bytes | None, bytes, int]:
    """ffmpeg's output (None past ``_MAX_BYTES``: it is stopped there, as a file of many channels
    would otherwise fill the memory), its log and its exit status."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        with process:
            data = process.stdout.read(_MAX_BYTES + 1)
            if len(data) > _MAX_BYTES:
                process.kill()
                return None, b"", -1
            process.wait()
        log.seek(0)
        return data, log.read(), process.returncode


def _read_wav_stream(data: bytes) -> tuple[int, np.ndarray]:
    """Channel count and interleaved float32 samples of ffmpeg's piped WAV output (whose sizes in
    the header are unset, as a pipe cannot be rewound: the data runs to the end)."""
    position, channels = 12, 1
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        body = position + 8
        if chunk == b"fmt ":
            channels = int.from_bytes(data[body + 2:body + 4], "little")
        elif chunk == b"data":
            payload = data[body:]
            return max(channels, 1), np.frombuffer(payload[: len(payload) // 4 * 4], dtype=np.float32)
        position = body + size + (size & 1)
    return 1, np.zeros(0, dtype=np.float32)


def check_waveform(samples: object, label: str = "audio") -> np.ndarray:
    """``samples`` (a 1-D tensor or array of 16 kHz samples) as float32 numpy, after checking that
    they are finite and long enough to drive one video frame."""
    if isinstance(samples, torch.Tensor):
        if samples.dtype == torch.bool or samples.is_complex():
            raise InputError(f"{label} samples must be real numbers, got a {samples.dtype} tensor")
        samples = samples.detach().cpu().float().numpy()
    if not isinstance(samples, np.ndarray):
        raise InputError(f"{label} must be a file path or 1-D 16 kHz samples, got {type(samples).__name__}")
    # Signed or unsigned integers (PCM) or floats: wav2vec2's extractor normalises their scale.
    if samples.dtype.kind not in "iuf":
        raise InputError(f"{label} samples must be real numbers, got an array of {samples.dtype}")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise InputError(f"{label} must be mono: 1-D samples at 16 kHz, got shape {list(samples.shape)}")
    if samples.size == 0:
        raise InputError(f"{label} holds no sound (0 samples)")
    if samples.size < MIN_SAMPLES:
        raise InputError(
            f"{label} is too short: {samples.size / SAMPLE_RATE * 1000:.0f} ms; s2v needs at least "
            f"{MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms (two wav2vec2 features)"
        )
    if not np.isfinite(samples).all():
        raise InputError(f"{label} holds NaN or infinite samples")
    return samples


def write_wav(samples: np.ndarray, path: str | Path) -> Path:
    """Write mono 16 kHz float samples as a 16-bit PCM WAV file (clipped to [-1, 1])."""
    import wave

    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return Path(path)
