"""Build entry point; metadata lives in pyproject.toml.

The C++ CPU kernels (csrc/) are built just in time on first use (``wan_kernels.native``). Set
``WAN_KERNELS_BUILD_EXT=1`` to build them ahead of time as ``wan_kernels._cpp``; do so with
``pip install --no-build-isolation .``, so the extension is compiled against the torch in use
rather than one an isolated build would download.
"""

import os

from setuptools import setup


def _ext_modules() -> dict:
    if os.environ.get("WAN_KERNELS_BUILD_EXT") != "1":
        return {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    from wan_kernels import native

    extension = CppExtension(
        native.PREBUILT, [str(s.relative_to(os.getcwd())) for s in native.sources()],
        extra_compile_args=native.CFLAGS, extra_link_args=native.LDFLAGS,
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(**_ext_modules())
