"""The standalone CMake build (``CMakeLists.txt``): configure, build and ``ctest`` the C++ kernels
against the torch in use, then load the library into torch as a user would.

The build goes to a temporary folder (about a minute on 2 cores), or to ``WAN_KERNELS_CMAKE_BUILD_DIR``
when set, where a later run rebuilds only what changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.kernels.exports import own_exports
from wan_kernels.torch_backend import OPS

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR_VAR = "WAN_KERNELS_CMAKE_BUILD_DIR"
TIMEOUT_S = 1200


def _missing_tool() -> str | None:
    for tool in ("cmake", "ctest"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (pip install cmake)"
    compilers = (os.environ.get("CXX"), "c++", "g++", "clang++")
    if not any(c and shutil.which(c) for c in compilers):
        return "no C++ compiler (c++, g++, clang++ or $CXX) is on PATH"
    return None


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run ``cmd``; its combined output, or a failure that shows it."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} exited with {done.returncode}:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, str]:
    """The configured and built CMake tree, and what configuring it printed."""
    missing = _missing_tool()
    if missing:
        pytest.skip(f"CMake build not tested: {missing}")
    folder = Path(os.environ.get(BUILD_DIR_VAR) or tmp_path_factory.mktemp("cmake-build"))
    configure = ["cmake", "-S", str(ROOT), "-B", str(folder), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"]
    if shutil.which("ninja") and not (folder / "CMakeCache.txt").is_file():
        configure += ["-G", "Ninja"]
    log = _run(configure)
    _run(["cmake", "--build", str(folder), "--parallel", str(os.cpu_count() or 2)])
    return folder, log


def _library(folder: Path, name: str) -> Path:
    found = sorted(folder.glob(f"lib{name}.*"))
    assert found, f"lib{name} was not built in {folder}"
    return found[0]


def test_ctest_passes(build):
    folder, _ = build
    output = _run(["ctest", "--output-on-failure", "--timeout", "300"], cwd=folder)
    assert "100% tests passed" in output, output


def test_the_library_loads_into_torch(build):
    """``torch.ops.load_library`` registers every op; one call matches its reference. In a fresh
    process: the just-in-time build, if this one has it loaded, registers the same names."""
    folder, _ = build
    script = textwrap.dedent(f"""
        import torch
        torch.ops.load_library({str(_library(folder, "wan_kernels_cpp"))!r})
        missing = [op for op in {list(OPS)!r} if not hasattr(torch.ops.wan_kernels_cpp, op)]
        assert not missing, f"ops not registered: {{missing}}"
        x = torch.randn(2, 5, 77)
        y = torch.randn(2, 5, 77).bfloat16()
        gate = torch.randn(2, 1, 77)
        out = torch.ops.wan_kernels_cpp.gated_residual(x, y, gate)
        torch.testing.assert_close(out, x + y.float() * gate, rtol=2**-20, atol=2**-18)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_the_libraries_export_nothing_of_their_own(build):
    folder, _ = build
    for library in [_library(folder, "wan_kernels_cpp"), *folder.glob("libwan_kernels_cuda.*")]:
        assert own_exports(library) == [], library


def test_cuda_kernels_are_built_or_skipped_with_a_reason(build):
    folder, log = build
    if torch.version.cuda is None:
        assert "CUDA kernels (wan_kernels_cuda) skipped: torch" in log, log
        assert not list(folder.glob("libwan_kernels_cuda.*"))
    elif "CUDA kernels (wan_kernels_cuda) enabled" in log:
        _library(folder, "wan_kernels_cuda")
    else:
        assert "CUDA kernels (wan_kernels_cuda) skipped:" in log, log


def test_a_second_build_has_nothing_to_do(build):
    folder, _ = build
    if not (folder / "build.ninja").is_file():
        pytest.skip("checked with the Ninja generator only")
    output = _run(["cmake", "--build", str(folder)])
    assert "no work to do" in output, output
