"""The C++ CPU extension (``csrc/``): found prebuilt, or built just in time on first use.

``setup.py`` builds it ahead of time as ``wan_kernels._cpp`` only when asked
(``WAN_KERNELS_BUILD_EXT=1 pip install --no-build-isolation .``): an isolated build would install
its own torch, whose ABI may not be the one in use. Otherwise the first call of ``load`` compiles
the sources with ``torch.utils.cpp_extension.load`` (needs a C++ compiler and ``ninja``) into
``WAN_KERNELS_BUILD_DIR`` (default ``~/.cache/wan_kernels/<torch version>``), where later
processes find it built. Its ops are ``torch.ops.wan_kernels_cpp.<op>``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import torch

NAME = "wan_kernels_cpp"
PREBUILT = "wan_kernels._cpp"
BUILD_DIR_VAR = "WAN_KERNELS_BUILD_DIR"
SOURCE_DIR = Path(__file__).resolve().parent.parent / "csrc"
# -ffp-contract=off: no fused multiply-adds, so products and sums round as torch's separate ops do.
CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
LDFLAGS = ["-fopenmp"]


def sources() -> list[Path]:
    """The extension's C++ sources (empty where ``csrc/`` does not ship, as in a wheel)."""
    return sorted(SOURCE_DIR.glob("*.cpp"))


def build_dir() -> Path:
    """Where the just-in-time build lives: one folder per torch and Python version."""
    version = f"torch-{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
    default = Path.home() / ".cache" / "wan_kernels" / version
    return Path(os.environ.get(BUILD_DIR_VAR) or default)


def is_built() -> bool:
    """Whether the extension exists already (prebuilt, or in the build folder): loading it then
    compiles nothing."""
    prebuilt = importlib.util.find_spec(PREBUILT)
    return (prebuilt is not None and bool(prebuilt.origin)) or (build_dir() / f"{NAME}.so").is_file()


@functools.cache
def load() -> bool:
    """Load the extension, building it first if needed; whether its ops are now registered.

    A failed build warns once with the reason and leaves the other backends in place.
    """
    prebuilt = importlib.util.find_spec(PREBUILT)
    if prebuilt is not None and prebuilt.origin:
        torch.ops.load_library(prebuilt.origin)
        return True
    if not sources():
        return False
    from torch.utils import cpp_extension

    folder = build_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            NAME, [str(s) for s in sources()], extra_cflags=CFLAGS, extra_ldflags=LDFLAGS,
            build_directory=str(folder), is_python_module=False, verbose=False,
        )
    except (OSError, RuntimeError, ImportError) as err:
        warnings.warn(
            f"wan_kernels: the C++ CPU backend could not be built in {folder} ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}); the other backends remain. "
            "It needs a C++ compiler and ninja (pip install ninja).",
            stacklevel=2,
        )
        return False
    return True
