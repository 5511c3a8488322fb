"""Running the CLI in a subprocess and reading back what it wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment plus ``extra``, with the repository importable."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_module(
    module: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd`` with ``env`` added, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
        env=cli_env(**(env or {})), cwd=cwd,
    )


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """All frames of an MP4 as [F, H, W, 3] uint8, and its fps."""
    with imageio.get_reader(path, format="FFMPEG") as reader:
        fps = reader.get_meta_data()["fps"]
        # A comprehension: list(reader) asks for a length, which imageio gives as inf.
        return np.stack([frame for frame in reader]), fps


def read_settings(path: Path) -> dict:
    """The JSON the CLI stored in the MP4 ``comment`` tag, read back with ffmpeg (whose
    ffmetadata output escapes ``=;#\\`` and newlines with a backslash)."""
    dump = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in dump.splitlines():
        if line.startswith("comment="):
            return json.loads(re.sub(r"\\(.)", r"\1", line.removeprefix("comment=")))
    raise AssertionError(f"no comment tag in {path}:\n{dump}")
