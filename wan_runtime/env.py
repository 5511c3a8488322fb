"""``python -m wan_runtime.env``: what a bug report needs to know about this installation.

Versions (Python, torch, CUDA, Triton, the video writer), the GPUs, the free CPU memory, which
attention and kernel backends this machine can use, where ``--compile`` can run, and the runtime's
on/off environment variables. Every probe
is guarded, so the report prints even on a broken installation.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from importlib import metadata

import torch

from wan_runtime import __version__
from wan_runtime.errors import InputError


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _importable_version(module: str) -> str:
    # Installed is not enough for compiled packages: a build for another torch fails to import.
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown version")
    except Exception as err:
        return f"not importable ({type(err).__name__}: {_first_line(str(err))})"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _gpus() -> list[str]:
    if not torch.cuda.is_available():
        return ["none (torch.cuda.is_available() is False)"]
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            f"cuda:{index} {props.name}, {props.total_memory / 2**30:.1f} GiB, "
            f"compute capability {props.major}.{props.minor}"
        )
    return gpus


def _attention_backends() -> str:
    from wan_runtime.models.attention import available_backends

    return ", ".join(available_backends())


def _kernel_backends() -> str:
    try:
        kernels = importlib.import_module("wan_kernels")
    except Exception as err:  # a broken optional build must not stop the report
        return f"wan_kernels cannot be imported ({type(err).__name__}: {_first_line(str(err))})"
    try:
        setting = kernels.get_backend()
        # What runs where: auto takes Triton on GPUs alone, though its interpreter lists it here.
        devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
        setting += "; runs " + ", ".join(f"{kernels.backend_for(device)} on {device}" for device in devices)
    except ValueError as err:  # a bad WAN_KERNELS_BACKEND: the report says so instead of failing
        setting = f"invalid ({_first_line(str(err))})"
    return f"{', '.join(kernels.available_backends()) or 'none'} (setting: {setting})"


def _compile_support() -> str:
    try:
        from wan_runtime.models.compilation import check_compile_support
    except Exception as err:  # a broken installation must not stop the report
        return f"cannot be checked ({type(err).__name__}: {_first_line(str(err))})"
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    states = []
    for name in devices:
        try:
            check_compile_support(torch.device(name))
            states.append(f"{name} ready")
        except Exception as err:  # the check's InputError, or a broken Inductor install
            states.append(f"{name} unavailable ({_first_line(str(err))})")
    return ", ".join(states)


def _cuda_graphs_support() -> str:
    if not torch.cuda.is_available():
        return "unavailable (it needs a CUDA device; this torch sees none)"
    return "cuda ready (not with --stream_blocks, --dit_fsdp or --ulysses_size)"


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg

        return f"{imageio_ffmpeg.get_ffmpeg_version()} ({imageio_ffmpeg.get_ffmpeg_exe()})"
    except Exception as err:  # missing package or binary: say which
        return f"unavailable ({type(err).__name__}: {_first_line(str(err))})"


def _cpu_memory() -> str:
    try:
        from wan_runtime.pipelines.host_memory import free_memory

        free = free_memory()
    except Exception as err:  # an unreadable /proc or cgroup file must not stop the report
        return f"cannot be read ({type(err).__name__}: {_first_line(str(err))})"
    return "unknown (not Linux)" if free is None else free.describe()


def _switches() -> str:
    """The runtime's on/off environment variables as set (a bad value said, as a run refuses it)."""
    from wan_runtime import inference_only
    from wan_runtime.pipelines import host_memory

    told = []
    for name, read in ((host_memory.ENV_VAR, host_memory.free_to_check),
                       (inference_only.ENV_VAR, inference_only.inference_only_enabled)):
        try:
            read()
        except InputError as err:
            told.append(f"{name} invalid ({err})")
        else:
            told.append(f"{name}={os.environ.get(name, '').strip() or '1 (unset, the default)'}")
    return ", ".join(told)


def report() -> list[tuple[str, str]]:
    """The report as (label, value) rows."""
    cuda = torch.version.cuda or "none (CPU build)"
    rows = [
        ("wan_runtime", __version__),
        ("python", f"{sys.version.split()[0]} ({sys.executable})"),
        ("platform", platform.platform()),
        ("torch", torch.__version__),
        ("torch CUDA", cuda),
        ("cuDNN", str(torch.backends.cudnn.version()) if torch.cuda.is_available() else "n/a"),
        ("triton", _importable_version("triton")),
        ("transformers", _version("transformers")),
        ("safetensors", _version("safetensors")),
        ("imageio-ffmpeg", _version("imageio-ffmpeg")),
        ("ffmpeg", _ffmpeg()),
        ("flash-attn", _version("flash-attn")),
    ]
    rows += [("GPU", gpu) for gpu in _gpus()]
    rows.append(("CPU memory", _cpu_memory()))
    rows += [("attention backends", _attention_backends()), ("kernel backends", _kernel_backends()),
             ("--compile", _compile_support()), ("--cuda_graphs", _cuda_graphs_support()),
             ("switches", _switches())]
    return rows


def main() -> int:
    """Print the report; returns the exit code."""
    rows = report()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
