"""The wheel a user installs holds what the package needs at run time: the kernels' sources for
the just-in-time C++ and CUDA builds (inside ``wan_kernels``), the type markers and the licence;
installed apart from any checkout, it builds and runs its C++ kernels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the build reads: the packages, csrc/ and the build's own files.
BUILD_INPUTS = ("setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md", "CMakeLists.txt",
                "csrc", "wan_runtime", "wan_kernels")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    # Without isolation: the test extras hold the setuptools the build needs, and nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(out)], check=True, capture_output=True, timeout=600)
    [built] = out.glob("wan_runtime-*.whl")
    return built


def test_the_wheel_ships_the_kernel_sources_types_and_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {f"wan_kernels/csrc/{path.relative_to(REPO / 'csrc').as_posix()}"
               for path in (REPO / "csrc").rglob("*") if path.is_file() and "tests" not in path.parts}
    assert sources and sources <= names
    assert not [name for name in names if name.startswith("wan_kernels/csrc/tests")]
    assert {"wan_kernels/py.typed", "wan_runtime/py.typed", "wan_runtime-0.1.0.dist-info/licenses/LICENSE"} \
        <= names


def test_installed_apart_from_a_checkout_it_runs_its_cpp_kernels(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = """
import torch, wan_kernels
from wan_kernels import native
print(native.SOURCE_DIR)
wan_kernels.set_backend("cpp")
x = torch.randn(1, 7, 64)
shift, scale = torch.randn(1, 1, 64), torch.randn(1, 1, 64)
out = wan_kernels.layernorm_modulate(x, shift, scale, 1e-6)
ref = wan_kernels.reference.layernorm_modulate(x, shift, scale, 1e-6)
print(float((out - ref).abs().max()))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(site)}, timeout=900)
    assert result.returncode == 0, result.stderr
    folder, error = result.stdout.split()
    assert Path(folder) == site / "wan_kernels" / "csrc"
    assert float(error) < 1e-5
