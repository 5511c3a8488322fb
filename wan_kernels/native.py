"""The compiled extensions: the C++ CPU kernels (``csrc/*.cpp``, backend ``cpp``) and the CUDA
kernels (``csrc/cuda/*.cu``, backend ``cuda``), each found prebuilt or built just in time on first use.

``setup.py`` builds them ahead of time as ``wan_kernels._cpp`` and ``wan_kernels._cuda`` only when
asked (``WAN_KERNELS_BUILD_EXT=1 pip install --no-build-isolation .``; the CUDA one only where
``buildable``): an isolated build would install its own torch, whose ABI may not be the one in use.
Otherwise the first call of ``load`` compiles the sources with ``torch.utils.cpp_extension.load``
(needs a C++ compiler and ``ninja``, and for CUDA a CUDA build of torch and ``nvcc``) into
``WAN_KERNELS_BUILD_DIR`` (default ``~/.cache/wan_kernels``), in a folder named after the torch and
Python versions and a digest of the extension's sources, headers, flags and build settings (the
compiler, the GPU architectures). A later process, from this checkout or any other with the same
sources, loads the library found there without running the build again; changed sources (a ``git
pull``) get a folder of their own, built on the first ``set_backend`` of that extension, never by
``auto``, which meanwhile warns once that it passes over the older build; a module setup.py built
is passed over likewise where a file under ``csrc/`` is newer than it, and with a warning where it
does not load (built for another torch). Older folders may be deleted. Their ops are
``torch.ops.<name>.<op>``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

BUILD_DIR_VAR = "WAN_KERNELS_BUILD_DIR"


def _source_dir() -> Path:
    """The copy of ``csrc/`` a wheel ships inside the package, else a checkout's, beside it."""
    package = Path(__file__).resolve().parent
    return package / "csrc" if (package / "csrc").is_dir() else package.parent / "csrc"


SOURCE_DIR = _source_dir()


@dataclass(frozen=True)
class Extension:
    name: str  # the torch.ops namespace, and the just-in-time module's name
    prebuilt: str  # the module setup.py builds
    label: str
    pattern: str  # its sources, under csrc/
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...] = ()
    cuda: bool = False  # CUDA sources, built with nvcc and cuda_cflags
    cuda_cflags: tuple[str, ...] = ()
    needs: str = ""

    def sources(self) -> list[Path]:
        """The extension's sources (empty where ``csrc/`` does not ship, as in a wheel)."""
        return sorted(SOURCE_DIR.glob(self.pattern))

    def inputs(self) -> list[Path]:
        """What its build reads from ``csrc/``: its sources and every header there."""
        headers = [*SOURCE_DIR.glob("*.h"), *SOURCE_DIR.glob("cuda/*.cuh")]
        return sorted({*self.sources(), *headers})

    def digest(self) -> str:
        """A digest of what its build reads: its sources, every header under ``csrc/``, its flags,
        the compiler named by ``CXX`` and, for CUDA, the GPU architectures torch compiles for (from
        ``TORCH_CUDA_ARCH_LIST``, else the visible GPUs) and the CUDA toolkit, so that a build for
        another GPU is never taken for this one's."""
        setting = [self.cflags, self.ldflags, self.cuda_cflags, os.environ.get("CXX")]
        if self.cuda:
            from torch.utils import cpp_extension

            gpus = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
            setting += [os.environ.get("TORCH_CUDA_ARCH_LIST"), gpus, cpp_extension.CUDA_HOME]
        h = hashlib.sha256(repr(setting).encode())
        for path in self.inputs():
            h.update(path.relative_to(SOURCE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
        return h.hexdigest()[:16]


# Nothing of an extension is exported: its ops register from static initialisers, and the inline
# functions both extensions compile from csrc/checks.h and csrc/rows.h stay each extension's own.
HIDDEN = ("-fvisibility=hidden", "-fvisibility-inlines-hidden")
# The C++ runtime linked as the shared library the process already runs (torch links it), also
# where the compiler's default links it statically: a second, static copy inside the extension,
# its symbols bound partly to the first, broke std::ostringstream, which builds the checks' error
# messages (seen with the CXX of a GPU machine's image: a segfault formatting the first one). Linux
# only: elsewhere torch's C++ runtime is not libstdc++.
SHARED_CXX_RUNTIME = ("-l:libstdc++.so.6",) if sys.platform.startswith("linux") else ()
# -ffp-contract=off and --fmad=false: no fused multiply-adds, so products and sums round as torch's
# separate ops do.
CPP = Extension(
    "wan_kernels_cpp", "wan_kernels._cpp", "C++ CPU", "*.cpp",
    ("-O3", "-fopenmp", "-ffp-contract=off", *HIDDEN),
    ("-fopenmp", *SHARED_CXX_RUNTIME), needs="a C++ compiler and ninja (pip install ninja)",
)
CUDA = Extension(
    "wan_kernels_cuda", "wan_kernels._cuda", "CUDA", "cuda/*.cu", ("-O3", *HIDDEN), SHARED_CXX_RUNTIME,
    cuda=True, cuda_cflags=("-O3", "--fmad=false", *(f"-Xcompiler={f}" for f in HIDDEN)),
    needs="a CUDA build of torch, nvcc (CUDA_HOME or PATH) and ninja",
)


def _builds_root() -> Path:
    version = f"torch-{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
    return Path(os.environ.get(BUILD_DIR_VAR) or Path.home() / ".cache" / "wan_kernels") / version


def build_dir(ext: Extension) -> Path:
    """Where ``ext``'s just-in-time build lives: one folder per torch and Python version and digest
    of its sources and build settings."""
    return _builds_root() / f"{ext.name}-{ext.digest()}"


# Written once a build has linked: the linker writes the library in place, so a library without it
# may be another process's build, still linking.
_COMPLETE = "complete"


def _library(ext: Extension) -> Path:
    return build_dir(ext) / f"{ext.name}.so"


def _complete(folder: Path) -> bool:
    return (folder / _COMPLETE).is_file()


def _installed(ext: Extension) -> str | None:
    spec = importlib.util.find_spec(ext.prebuilt)
    return spec.origin if spec is not None and spec.origin else None


def _stale_prebuilt(ext: Extension) -> str | None:
    """The module setup.py built where a source or header beside it (a checkout, after a ``git
    pull``) is newer than it: built from other sources, so passed over like an older just-in-time
    build. An installed wheel ships no ``csrc/`` and is never stale."""
    found = _installed(ext)
    if found is None:
        return None
    built = Path(found).stat().st_mtime
    return found if any(p.stat().st_mtime > built for p in ext.inputs()) else None


def _prebuilt(ext: Extension) -> str | None:
    """The module setup.py built, where it is of these sources."""
    found = _installed(ext)
    return None if found is None or _stale_prebuilt(ext) else found


@functools.cache
def is_built(ext: Extension) -> bool:
    """Whether ``ext`` exists already (prebuilt, or built completely in its build folder): loading it
    then compiles nothing. Looked up once per process (``auto`` asks on every op call); ``load``
    refreshes it."""
    return _prebuilt(ext) is not None or _complete(build_dir(ext))


@functools.cache
def other_builds(ext: Extension) -> list[Path]:
    """Complete builds of ``ext`` for other sources or settings (an earlier checkout, another GPU):
    ``auto`` does not take them, and says so once."""
    here = build_dir(ext)
    older = sorted(f for f in _builds_root().glob(f"{ext.name}-*") if f != here and _complete(f))
    stale = _stale_prebuilt(ext)
    return older + [Path(stale)] if stale else older


def buildable(ext: Extension) -> bool:
    """Whether this torch can build ``ext``: any for C++; for CUDA a CUDA build with ``nvcc`` found
    (torch looks in ``CUDA_HOME``, ``PATH`` and ``/usr/local/cuda``)."""
    if not ext.cuda:
        return True
    if torch.version.cuda is None:
        return False
    from torch.utils import cpp_extension

    return cpp_extension.CUDA_HOME is not None


def find_nvcc() -> str | None:
    """An ``nvcc`` on this machine: ``CUDA_HOME``'s, ``PATH``'s, or that of the
    ``nvidia-cuda-nvcc`` pip package (whose recent versions ship the compiler driver)."""
    candidates = [Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc"] if os.environ.get("CUDA_HOME") else []
    if shutil.which("nvcc"):
        candidates.append(Path(shutil.which("nvcc")))
    spec = importlib.util.find_spec("nvidia.cuda_nvcc") if importlib.util.find_spec("nvidia") else None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "bin" / "nvcc" for p in spec.submodule_search_locations]
    return next((str(c) for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def nvcc_command(nvcc: str, source: Path, output: Path, arch: str = "sm_90") -> list[str]:
    """``nvcc`` compiling one source of ``CUDA`` to an object file with the flags and the C++
    standard that ``torch.utils.cpp_extension`` builds it with (the compile check's command)."""
    from torch.utils import cpp_extension

    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    return [nvcc, "-c", str(source), "-o", str(output), f"-arch={arch}", "-std=c++20", abi, "-Xcompiler",
            "-fPIC", *cpp_extension.COMMON_NVCC_FLAGS, *CUDA.cuda_cflags, *includes]


_FAILURES: dict[str, str] = {}


def failure(ext: Extension) -> str | None:
    """Why ``load(ext)`` gave False in this process, with the fix; None if it did not."""
    return _FAILURES.get(ext.name)


@functools.cache
def load(ext: Extension) -> bool:
    """Load ``ext``, building it first if needed; whether its ops are now registered.

    A failed build, or a prebuilt module that does not load (built for another torch), warns once
    with the reason and leaves the other backends in place.
    """
    prebuilt = _prebuilt(ext)
    if prebuilt is None and not ext.sources():
        _FAILURES[ext.name] = (f"this install holds neither its sources ({SOURCE_DIR}) nor a prebuilt "
                               "module: reinstall wan-runtime, whose wheel carries them")
        return False
    from torch.utils import cpp_extension

    folder = build_dir(ext)
    try:
        if prebuilt is not None:
            torch.ops.load_library(prebuilt)
        elif _complete(folder):
            # Built from these very sources and settings: cpp_extension.load would rerun ninja, which
            # rebuilds whenever the sources' paths differ from the build's (another checkout).
            torch.ops.load_library(str(_library(ext)))
        else:
            if not buildable(ext):
                raise RuntimeError(f"torch {torch.__version__} (CUDA {torch.version.cuda}) found no nvcc")
            folder.mkdir(parents=True, exist_ok=True)
            # A minute or more with no output would look like a hang.
            print(f"wan_kernels: building the {ext.label} kernels once, into {folder}", file=sys.stderr,
                  flush=True)
            cpp_extension.load(
                ext.name, [str(s) for s in ext.sources()], extra_cflags=list(ext.cflags),
                extra_cuda_cflags=list(ext.cuda_cflags), extra_ldflags=list(ext.ldflags),
                build_directory=str(folder), is_python_module=False, verbose=False, with_cuda=ext.cuda,
            )
            (folder / _COMPLETE).touch()
    # CalledProcessError: cpp_extension's compiler check, where the compiler does not run.
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as err:
        # The compiler's output is in the message: its error lines, else its last line.
        lines = str(err).strip().splitlines() or [""]
        reason = "\n".join([line for line in lines if "error" in line.lower()][:10] or lines[-1:])
        where, fix = (
            (f"from {prebuilt}", "Rebuild it for this torch (WAN_KERNELS_BUILD_EXT=1 pip install "
             "--no-build-isolation .) or uninstall it") if prebuilt else
            (f"in {folder}", f"It needs {ext.needs}; delete that folder to build it afresh")
        )
        told = f"could not be built or loaded {where} ({type(err).__name__}: {reason})"
        # Kept for set_backend's error: load is cached, and its warning is given once.
        _FAILURES[ext.name] = f"it {told}; {fix}"
        warnings.warn(f"wan_kernels: the {ext.label} backend {told}; the other backends remain. {fix}.",
                      stacklevel=2)
        return False
    is_built.cache_clear()
    _FAILURES.pop(ext.name, None)
    return True
