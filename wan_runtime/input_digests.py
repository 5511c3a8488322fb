"""What a video's input files held: the SHA-256 of each file a run reads beside the checkpoint
(the image, the speech, the pose video, the LoRAs), stored in the video, so that
``--settings_from`` can tell a file at a recorded path that has changed since."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from wan_runtime.file_hashes import file_digest

if TYPE_CHECKING:
    from wan_runtime.cli_args import GenerateConfig

# The key of a video's settings that holds the digests, by absolute path.
INPUTS_KEY = "input_files"


def input_files(config: GenerateConfig) -> list[Path]:
    """The files ``config``'s video is made from, but the checkpoint's, as absolute paths."""
    paths = [config.image_path, config.audio_path, config.pose_video, *(lora.path for lora in config.loras)]
    return list(dict.fromkeys(Path(path).absolute() for path in paths if path is not None))


def input_digests(config: GenerateConfig) -> dict[str, str]:
    """``sha256:<hex>`` of each of ``input_files(config)`` as it is now, by path; a file gone or
    unreadable since the run read it is left out (the video it made is not to be lost for it)."""
    digests = {}
    for path in input_files(config):
        try:
            digests[str(path)] = _recorded_digest(path)
        except OSError:
            continue
    return digests


def _recorded_digest(path: Path) -> str:
    """``sha256:<hex>`` of the file ``path``, read once per size and time of change (a batch's
    videos share their files)."""
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    return f"sha256:{file_digest(path)}"


def changed_files(recorded: object, config: GenerateConfig) -> list[Path]:
    """The files ``config`` reads whose digest differs from the one ``recorded`` (a video's
    ``INPUTS_KEY``; a video without it, or a file it does not name, has none to differ)."""
    if not isinstance(recorded, dict):
        return []
    changed = []
    for path in input_files(config):
        then = recorded.get(str(path))
        if isinstance(then, str) and path.is_file() and _recorded_digest(path) != then:
            changed.append(path)
    return changed
