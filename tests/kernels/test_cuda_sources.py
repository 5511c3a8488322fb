"""Every CUDA source of the ``cuda`` backend (``csrc/cuda/*.cu``) compiles for sm_90 with no warning.

Needs only ``nvcc`` (``wan_kernels.native.find_nvcc``: ``CUDA_HOME``, ``PATH`` or the
``nvidia-cuda-nvcc`` pip package), not a GPU nor a CUDA build of torch, so a CPU machine checks
that the kernels build; running them is the GPU's part (every kernel test has a ``cuda`` case).
The sources compile side by side, one per core: torch's headers make each take half a minute.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from wan_kernels import native

NVCC = native.find_nvcc()
SOURCES = native.CUDA.sources()
pytestmark = pytest.mark.skipif(
    NVCC is None, reason="no nvcc (CUDA_HOME, PATH or pip nvidia-cuda-nvcc): CUDA sources not compile-checked"
)


def _cuda_header_stub(folder: Path) -> list[str]:
    """A CPU build of torch ships c10/cuda without the header its CMake generates for CUDA builds;
    its whole content there is the macro below. The flag putting a stand-in on the include path."""
    if any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").is_file() for p in cpp_extension.include_paths()):
        return []
    stub = folder / "c10/cuda/impl/cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    return [f"-I{folder}"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("cuda_sources")
    extra = _cuda_header_stub(folder / "stub")

    def compile_one(source: Path) -> subprocess.CompletedProcess:
        command = native.nvcc_command(NVCC, source, folder / f"{source.stem}.o") + extra
        return subprocess.run(command, capture_output=True, text=True, timeout=900)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(zip((s.name for s in SOURCES), pool.map(compile_one, SOURCES), strict=True))


def test_there_are_sources():
    assert {s.name for s in SOURCES} >= {"layernorm_modulate.cu", "gated_residual.cu", "rel_error.cu"}


@pytest.mark.parametrize("name", [s.name for s in SOURCES])
def test_compiles_without_warnings(compiled, name):
    result = compiled[name]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert not warnings, "\n".join(warnings[:20])
