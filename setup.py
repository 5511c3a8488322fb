"""Build entry point; metadata lives in pyproject.toml.

The C++ CPU kernels (csrc/) and the CUDA kernels (csrc/cuda/) are built just in time on first use
(``wan_kernels.native``), from the copy of ``csrc/`` a wheel carries inside ``wan_kernels`` (or a
checkout's own). Set ``WAN_KERNELS_BUILD_EXT=1`` to build them ahead of time as
``wan_kernels._cpp`` and, where torch is a CUDA build and nvcc is found, ``wan_kernels._cuda``; do
so with ``pip install --no-build-isolation .``, so the extensions are compiled against the torch in
use rather than one an isolated build would download.
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# pip runs this file with the build's own sys.path, which lacks the package being built.
sys.path.insert(0, str(ROOT))


class _BuildPy(build_py):
    """Copies ``csrc/`` (but its C++ tests) into the built ``wan_kernels``: an installed package
    builds its kernels just in time from there."""

    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):  # an editable install reads the checkout's
            shutil.copytree(ROOT / "csrc", Path(self.build_lib) / "wan_kernels" / "csrc",
                            ignore=shutil.ignore_patterns("tests"), dirs_exist_ok=True)


def _ext_modules() -> dict:
    if os.environ.get("WAN_KERNELS_BUILD_EXT") != "1":
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError as err:
        raise SystemExit(
            "WAN_KERNELS_BUILD_EXT=1 compiles the kernels against the torch in use, which this build does "
            f"not see ({err}): install torch first, then pip install --no-build-isolation ."
        ) from err

    from wan_kernels import native

    extensions = []
    for ext in (native.CPP, native.CUDA):
        if not native.buildable(ext) or not ext.sources():
            continue
        kind = CUDAExtension if ext.cuda else CppExtension
        flags = {"cxx": list(ext.cflags), "nvcc": list(ext.cuda_cflags)} if ext.cuda else list(ext.cflags)
        extensions.append(kind(
            ext.prebuilt, [str(s.relative_to(ROOT)) for s in ext.sources()],
            extra_compile_args=flags, extra_link_args=list(ext.ldflags),
        ))
    return {"ext_modules": extensions, "cmdclass": {"build_ext": BuildExtension, "build_py": _BuildPy}}


setup(**({"cmdclass": {"build_py": _BuildPy}} | _ext_modules()))
