"""``generate --demo``: the whole pipeline on tiny random weights, to prove an installation works.

The demo checkpoint is a complete official-layout folder written once by
``write_task_checkpoint`` into the user's cache and reused afterwards. Its weights are random, so
the video is noise; what it shows is that loading, sampling, decoding and writing all run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wan_runtime import __version__
from wan_runtime.checkpoint_verify import release_files
from wan_runtime.errors import CheckpointError
from wan_runtime.file_hashes import file_digest
from wan_runtime.tasks import check_checkpoint_dir
from wan_runtime.tiny_checkpoints import write_task_checkpoint

# The SHA-256 of each file the demo checkpoint was written with, beside them: a file changed
# since (a disk error, an edit) would otherwise fail the demo as a damaged release, whose advice
# (download it again) does not apply to a folder written here.
_DIGESTS = ".sha256.json"

NOTICE = (
    "demo: the weights are tiny and random, so the video is noise; "
    "it proves the installation works, not the model"
)


@dataclass(frozen=True)
class DemoSettings:
    """The demo's defaults, named as the ``TaskSpec`` fields or the command-line flags they replace."""

    default_size: str = "128*96"
    frame_num: int = 9
    sampling_steps: int = 4
    # s2v-14B: frames per clip; the built-in speech lasts one clip.
    infer_frames: int = 8
    # Tiny random weights run in seconds on any CPU, where float32 is the fast dtype.
    device: str = "cpu"
    dtype: str = "float32"


DEMO_SETTINGS = DemoSettings()


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/wan_runtime/demo`` (``~/.cache/...`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wan_runtime" / "demo"


def demo_checkpoint(task: str) -> tuple[Path, bool]:
    """The demo checkpoint folder of ``task`` and whether this call wrote it.

    The folder is ``<cache_root>/<task>-v<version>``, so a new runtime version writes its own.
    It is written into a temporary sibling and renamed into place, so an interrupted write never
    leaves a folder that looks complete; a folder found incomplete, or with a file that is not what
    was written (by the SHA-256 kept beside the files; 50 MB, hashed in a fraction of a second), is
    written again.
    """
    folder = cache_root() / f"{task}-v{__version__}"
    if folder.exists():
        problem = _problem(task, folder)
        if problem is None:
            return folder, False
        warnings.warn(f"demo: the cached checkpoint {folder} {problem}; writing it again", stacklevel=2)
        # Moved aside in one step first: a process removes what it moved, never a folder another
        # has just put in place.
        trash = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        with contextlib.suppress(OSError):
            folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write_task_checkpoint(task, staging, seed=0)
        names = release_files(check_checkpoint_dir(task, staging), staging)
        (staging / _DIGESTS).write_text(json.dumps({name: file_digest(staging / name) for name in names}))
        try:
            staging.rename(folder)
        except OSError:
            # Another demo run finished writing the same folder first: use that one.
            check_checkpoint_dir(task, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, True


def _problem(task: str, folder: Path) -> str | None:
    """What is wrong with the demo checkpoint ``folder``, in words, or None."""
    try:
        names = release_files(check_checkpoint_dir(task, folder), folder)
    except CheckpointError:
        return "is incomplete"
    try:
        written = json.loads((folder / _DIGESTS).read_text())
    except (OSError, ValueError):
        written = None
    if not isinstance(written, dict):
        return (f"has no readable record of its files ({_DIGESTS}: an earlier wan_runtime wrote it, or it "
                "is damaged)")
    try:
        changed = [name for name in names if written.get(name) != file_digest(folder / name)]
    except OSError as err:
        return f"cannot be read ({err})"
    return None if not changed else f"has files changed since it was written ({', '.join(changed)})"


def demo_image(width: int = 128, height: int = 96) -> Image.Image:
    """A small RGB test card (a colour gradient with a disc) for the image-to-video demo."""
    red = np.broadcast_to(np.linspace(0, 255, width, dtype=np.uint8), (height, width))
    green = np.broadcast_to(np.linspace(0, 255, height, dtype=np.uint8)[:, None], (height, width))
    img = Image.fromarray(np.stack([red, green, np.full((height, width), 128, np.uint8)], axis=-1))
    r = min(width, height) // 3
    ImageDraw.Draw(img).ellipse(
        (width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r), fill=(240, 240, 240)
    )
    return img


# The built-in speech: 0.4 s at 16 kHz, which starts one clip of the demo's 8 frames (0.5 s).
DEMO_AUDIO_SECONDS = 0.4


def demo_audio() -> np.ndarray:
    """A short speech-like sound for the s2v demo: mono 16 kHz float32 samples of a rising
    chirp (150 to 450 Hz) with a syllable-rate (4 Hz) loudness envelope."""
    rate = 16000
    t = np.arange(int(DEMO_AUDIO_SECONDS * rate)) / rate
    phase = 2 * np.pi * (150 * t + 375 * t**2)  # instantaneous pitch 150 + 750 t Hz
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    return (0.5 * envelope * np.sin(phase)).astype(np.float32)
