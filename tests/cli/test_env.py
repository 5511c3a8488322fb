"""``python -m wan_runtime.env`` prints the facts a bug report needs."""

from __future__ import annotations

import re

import torch

from tests.cli.helpers import run_module


def test_env_report_runs():
    result = run_module("wan_runtime.env", timeout=120)
    assert result.returncode == 0, result.stderr
    # Each line is a label padded with spaces, then the value.
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
    assert rows["torch"] == torch.__version__
    assert rows["attention backends"].startswith("sdpa")
    for key in ("python", "torch CUDA", "triton", "imageio-ffmpeg", "ffmpeg", "GPU", "kernel backends"):
        assert key in rows, result.stdout
