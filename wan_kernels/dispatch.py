"""Backend registry and selection.

A backend is a named set of implementations, one per op, registered with ``register``. The backend
in use is ``auto`` unless ``set_backend`` or the ``WAN_KERNELS_BACKEND`` environment variable
(read at the first op call or ``get_backend()``, so that a bad value is an error there, not at
import) names one. ``auto`` picks, per call, the first backend of
the device's preference list that is available and implements the op: on a GPU the CUDA C++
extension ``cuda`` if it is built, then ``triton``; on a CPU the C++ extension ``cpp`` if it is
built, then ``torch``. ``auto`` never compiles anything: ``set_backend("cpp")`` or
``set_backend("cuda")`` builds that extension on first use (see ``wan_kernels.native``), and later
processes find it built. ``set_backend("torch")`` switches every fused kernel off.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable

import torch

from wan_kernels import native

ENV_VAR = "WAN_KERNELS_BACKEND"
AUTO = "auto"
# Compiled backends come first.
KNOWN_BACKENDS = ("cuda", "triton", "cpp", "torch")
_PREFERENCE = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}
_MODULES = {
    "torch": "wan_kernels.torch_backend", "triton": "wan_kernels.triton", "cpp": "wan_kernels.cpp_backend",
    "cuda": "wan_kernels.cuda_backend",
}
_EXTENSIONS = {"cpp": native.CPP, "cuda": native.CUDA}

_IMPLS: dict[str, dict[str, Callable]] = {name: {} for name in KNOWN_BACKENDS}
_loaded: set[str] = set()
_warned: set[tuple[str, str]] = set()
_warned_builds: set[str] = set()


def register(backend: str, op: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as ``backend``'s implementation of ``op``."""
    if backend not in _IMPLS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(KNOWN_BACKENDS)}")

    def decorate(fn: Callable) -> Callable:
        _IMPLS[backend][op] = fn
        return fn

    return decorate


def _interpreter_requested() -> bool:
    # Triton's own reading of a boolean variable.
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")


def triton_interpreted() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``).

    Triton reads the variable as it decorates functions, its own ``tl.sum`` and the like included,
    so it must be set before ``triton`` is first imported: set after, the interpreter would call
    Triton's own functions compiled for a GPU, and this says no.
    """
    if not _interpreter_requested():
        return False
    standard = sys.modules.get("triton.language.standard")
    if standard is None:
        return True
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(standard.sum, InterpretedFunction)


def _unavailable_reason(name: str) -> str:
    if name in _EXTENSIONS and _EXTENSIONS[name].cuda and not torch.cuda.is_available():
        if torch.version.cuda is None:
            return f"; it needs an NVIDIA GPU and a CUDA build of torch (this is torch {torch.__version__})"
        return "; it needs an NVIDIA GPU, and torch sees none"
    if name in _EXTENSIONS:
        failure = native.failure(_EXTENSIONS[name])
        return "" if failure is None else f"; {failure}"
    if name != "triton":
        return ""
    if not _installed("triton"):
        return "; Triton is not installed (pip install triton)"
    if not torch.cuda.is_available() and not _interpreter_requested():
        return "; on a CPU Triton needs its interpreter: set TRITON_INTERPRET=1 before importing triton"
    if not torch.cuda.is_available() and not triton_interpreted():
        return "; TRITON_INTERPRET=1 was set after triton was imported: set it before anything imports triton"
    error = _import_error("triton")
    return f"; importing triton failed ({error})" if error else ""


@functools.cache
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@functools.cache
def _import_error(module: str) -> str | None:
    """Why ``module`` does not import, or None: an installed package may still fail to (a broken or
    mismatched install), and a backend whose module fails must not count as available."""
    if not _installed(module):
        return f"{module} is not installed"
    try:
        importlib.import_module(module)
    except Exception as err:  # Triton's import fails in many ways (versions, drivers): each a reason.
        return f"{type(err).__name__}: {err}"
    return None


def _runs_on(backend: str, device: torch.device) -> bool:
    if backend == "torch":
        return True
    if backend == "triton":
        return device.type == "cuda" or (device.type == "cpu" and triton_interpreted())
    if backend == "cuda":
        return device.type == "cuda"
    return backend == "cpp" and device.type == "cpu"


def _usable(backend: str, build: bool = False) -> bool:
    if backend in _EXTENSIONS:
        ext = _EXTENSIONS[backend]
        if ext.cuda and not torch.cuda.is_available():
            return False
        if not (build or native.is_built(ext)):
            _warn_of_other_builds(backend, ext)
            return False
        return native.load(ext)
    if backend not in _MODULES:
        return False
    # The import comes last: on a CPU without the interpreter, triton is not imported at all.
    return backend == "torch" or (
        (torch.cuda.is_available() or triton_interpreted()) and _import_error(backend) is None)


def _warn_of_other_builds(backend: str, ext: native.Extension) -> None:
    """A build of other sources (before a ``git pull``) or settings is passed over, once, aloud:
    ``auto`` would otherwise quietly run without the extension."""
    others = native.other_builds(ext)
    if others and backend not in _warned_builds:
        _warned_builds.add(backend)
        warnings.warn(
            f"wan_kernels: the {ext.label} build in {others[-1]} is of other sources or build settings "
            f"than these; 'auto' runs without it until set_backend({backend!r}) builds it in "
            f"{native.build_dir(ext)}",
            stacklevel=4,
        )


def _load(backend: str) -> None:
    if backend not in _loaded:
        importlib.import_module(_MODULES[backend])
        _loaded.add(backend)


def available_backends() -> list[str]:
    """Backends that can run on this machine, compiled ones first. Which one ``auto`` takes also
    depends on the tensors' device: on a CPU it never takes ``triton``, even when interpreted.

    ``triton`` counts when Triton is importable and either CUDA is available or Triton's CPU
    interpreter is switched on (``TRITON_INTERPRET=1``); ``cpp`` when the C++ extension is built
    and loads (``set_backend("cpp")`` builds it); ``cuda`` likewise for the CUDA extension, where
    CUDA is available (``set_backend("cuda")`` builds it).
    """
    return [name for name in KNOWN_BACKENDS if _usable(name)]


def _check_name(name: str) -> str:
    if name == AUTO:
        return name
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"unknown wan_kernels backend {name!r}; choose auto or one of {KNOWN_BACKENDS}")
    if not _usable(name, build=True):
        raise ValueError(f"wan_kernels backend {name!r} is not available here{_unavailable_reason(name)}; "
                         f"available: {available_backends()}")
    return name


# None until set_backend or the first use reads the environment.
_selected: str | None = None


def set_backend(name: str) -> None:
    """Use backend ``name`` (or ``"auto"``) for every later op call."""
    global _selected
    _selected = _check_name(name)


def get_backend() -> str:
    """The backend setting: ``"auto"`` or a backend's name. Raises ``ValueError`` naming
    ``WAN_KERNELS_BACKEND`` when that variable holds an unknown or unavailable backend."""
    global _selected
    if _selected is None:
        value = os.environ.get(ENV_VAR, AUTO) or AUTO
        try:
            _selected = _check_name(value)
        except ValueError as err:
            raise ValueError(f"{ENV_VAR}={value!r}: {err}") from None
    return _selected


def backend_for(device: torch.device | str) -> str:
    """The backend an op call on ``device`` (a ``torch.device`` or a name such as ``"cuda"``) runs
    under the current setting (for ``auto``, the first available of the device's preference list)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"wan_kernels.backend_for: device must be a torch.device or a device name such as "
                         f"'cuda' or 'cpu', got {device!r}") from err
    selected = get_backend()
    return selected if selected != AUTO else next(iter(_preferred(device)), "torch")


def _preferred(device: torch.device) -> list[str]:
    """The backends ``auto`` may take on ``device``, in its order."""
    return [b for b in _PREFERENCE.get(device.type, ("torch",)) if _usable(b) and _runs_on(b, device)]


def _impl(backend: str, op: str) -> Callable | None:
    _load(backend)
    return _IMPLS[backend].get(op)


def implementation(backend: str, op: str) -> Callable:
    """``backend``'s own implementation of ``op``, called as the custom op calls it (no input checks,
    no device rules): for tools that inspect one backend's kernels."""
    if backend not in _IMPLS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(KNOWN_BACKENDS)}")
    fn = _impl(backend, op)
    if fn is None:
        raise NotImplementedError(f"wan_kernels.{op}: backend {backend!r} does not implement it")
    return fn


def resolve(op: str, device: torch.device) -> Callable:
    """The implementation of ``op`` for tensors on ``device`` under the current setting."""
    selected = get_backend()
    if selected != AUTO:
        if not _runs_on(selected, device):
            raise ValueError(
                f"wan_kernels.{op}: backend {selected!r} cannot run on {device.type} tensors"
                + (" (set TRITON_INTERPRET=1 for Triton's CPU interpreter)" if selected == "triton" else "")
            )
        return implementation(selected, op)
    preferred = _preferred(device)
    for backend in preferred:
        fn = _impl(backend, op)
        if fn is not None:
            if backend != preferred[0] and (op, backend) not in _warned:
                _warned.add((op, backend))
                warnings.warn(
                    f"wan_kernels.{op}: {preferred[0]!r} does not implement it on {device.type}; "
                    f"using {backend!r}",
                    stacklevel=3,
                )
            return fn
    raise NotImplementedError(f"wan_kernels.{op}: no available backend implements it on {device.type}")
