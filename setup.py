"""Build entry point; metadata lives in pyproject.toml.

The C++ CPU kernels (csrc/) and the CUDA kernels (csrc/cuda/) are built just in time on first use
(``wan_kernels.native``). Set ``WAN_KERNELS_BUILD_EXT=1`` to build them ahead of time as
``wan_kernels._cpp`` and, where torch is a CUDA build and nvcc is found, ``wan_kernels._cuda``; do
so with ``pip install --no-build-isolation .``, so the extensions are compiled against the torch in
use rather than one an isolated build would download.
"""

import os

from setuptools import setup


def _ext_modules() -> dict:
    if os.environ.get("WAN_KERNELS_BUILD_EXT") != "1":
        return {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    from wan_kernels import native

    extensions = []
    for ext in (native.CPP, native.CUDA):
        if not native.buildable(ext) or not ext.sources():
            continue
        kind = CUDAExtension if ext.cuda else CppExtension
        flags = {"cxx": list(ext.cflags), "nvcc": list(ext.cuda_cflags)} if ext.cuda else list(ext.cflags)
        extensions.append(kind(
            ext.prebuilt, [str(s.relative_to(os.getcwd())) for s in ext.sources()],
            extra_compile_args=flags, extra_link_args=list(ext.ldflags),
        ))
    return {"ext_modules": extensions, "cmdclass": {"build_ext": BuildExtension}}


setup(**_ext_modules())
