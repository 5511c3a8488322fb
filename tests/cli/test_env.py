"""``python -m wan_runtime.env`` prints the facts a bug report needs."""

from __future__ import annotations

import re

import torch
from torch._inductor import config as inductor_config

from tests.cli.helpers import run_module
from wan_runtime import env


def test_env_report_runs():
    result = run_module("wan_runtime.env", timeout=120)
    assert result.returncode == 0, result.stderr
    # Each line is a label padded with spaces, then the value.
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
    assert rows["torch"] == torch.__version__
    assert rows["attention backends"].startswith("sdpa")
    for key in ("python", "torch CUDA", "triton", "imageio-ffmpeg", "ffmpeg", "GPU", "kernel backends"):
        assert key in rows, result.stdout
    assert re.fullmatch(r"[\d.]+ GiB of RAM free \([^)]+\) and [\d.]+ GiB of swap", rows["CPU memory"])
    # This machine has a C++ compiler (the C++ kernel tests build with it).
    assert rows["--compile"].endswith("cpu ready")
    graphs = "cuda ready" if torch.cuda.is_available() else "unavailable (it needs a CUDA device"
    assert rows["--cuda_graphs"].startswith(graphs)


def test_env_report_says_why_compile_cannot_run():
    with inductor_config.patch({"cpp.cxx": ("no-such-c++-compiler",)}):
        rows = dict(env.report())
    assert "cpu unavailable (compile on the CPU needs a C++ compiler" in rows["--compile"]


def test_env_report_names_a_bad_backend_variable_instead_of_failing():
    result = run_module("wan_runtime.env", env={"WAN_KERNELS_BACKEND": "bogus"}, timeout=120)
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("kernel backends")]
    assert "(setting: invalid (WAN_KERNELS_BACKEND='bogus': unknown wan_kernels backend 'bogus'" in row


def test_command_line_lists_a_bad_backend_variable_as_a_problem():
    result = run_module("wan_runtime.generate", "--demo", "--sample_steps", "0",
                        env={"WAN_KERNELS_BACKEND": "bogus"}, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert "error: WAN_KERNELS_BACKEND='bogus': unknown wan_kernels backend" in result.stderr
    assert any("--sample_steps" in line for line in lines)


def test_env_report_shows_the_switches_and_a_bad_value(monkeypatch):
    monkeypatch.setenv("WAN_HOST_MEMORY_CHECK", "bogus")
    monkeypatch.delenv("WAN_INFERENCE_ONLY", raising=False)
    switches = dict(env.report())["switches"]
    assert switches.startswith("WAN_HOST_MEMORY_CHECK invalid (WAN_HOST_MEMORY_CHECK must be 1 "), switches
    assert switches.endswith(", WAN_INFERENCE_ONLY=1 (unset, the default)"), switches
    monkeypatch.setenv("WAN_HOST_MEMORY_CHECK", "0")
    assert dict(env.report())["switches"].startswith("WAN_HOST_MEMORY_CHECK=0, ")
