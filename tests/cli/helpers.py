"""Running the CLI in a subprocess and reading back what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from wan_runtime.video_io import METADATA_KEY, mp4_tags

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment plus ``extra``, with the repository importable."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def launch_env(monkeypatch, rank: int, world: int, local_rank: int | None = None) -> None:
    """This process's environment as torchrun sets it for process ``rank`` of ``world`` (by default
    all on one machine); no process group is started."""
    values = {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": rank if local_rank is None else local_rank,
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 29500}
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


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
    """The JSON the CLI stored in the MP4's ``comment`` tag (``mp4_tags`` is tested against
    ffmpeg's own writer)."""
    return json.loads(mp4_tags(path)[METADATA_KEY])
