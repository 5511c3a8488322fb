"""The compiled ops check their own arguments (``csrc/checks.h``): called directly, as users of the
CMake library do, ``torch.ops.wan_kernels_cpp.<op>`` (and on a GPU ``torch.ops.wan_kernels_cuda.<op>``)
given a tensor of the wrong size, dtype, layout or device raises a ``RuntimeError`` naming the op
instead of reading out of bounds, with the whole message (a second, static copy of the C++ runtime
inside an extension once cut it short or crashed formatting it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import wan_kernels
from tests.kernels.exports import own_exports
from wan_kernels import native

ROOT = Path(__file__).resolve().parents[2]
EPS = 1e-6
# x [B, L, C] = [2, 3, 8], a per-sample modulation row [B, 1, C]; qk_rmsnorm_rope: 2 heads of 4.
SHAPES = {"x": (2, 3, 8), "row": (2, 1, 8), "weight": (8,), "table": (3, 1, 2)}
# Each op's arguments in schema order: the shape (a key of SHAPES) of a tensor, else the value.
ARGS = {
    "layernorm_modulate": {"x": "x", "shift": "row", "scale": "row", "eps": EPS, "round_to_input": True,
                           "out_dtype": torch.float32},
    "gated_residual": {"x": "x", "y": "x", "gate": "row"},
    "gated_residual_layernorm_modulate": {"x": "x", "y": "x", "gate": "row", "shift": "row", "scale": "row",
                                          "eps": EPS, "out_dtype": torch.float32},
    "qk_rmsnorm_rope": {"q": "x", "k": "x", "weight_q": "weight", "weight_k": "weight", "cos": "table",
                        "sin": "table", "num_heads": 2, "eps": EPS},
    "rel_l1": {"a": "x", "b": "x", "stride": 1},
    "rel_l2": {"a": "x", "b": "x", "stride": 1},
    "residual_apply": {"x": "x", "residual": "x"},
    "residual_capture": {"out": "x", "inp": "x"},
}
TENSOR_ARGS = [(op, name) for op, args in ARGS.items() for name, v in args.items() if v in SHAPES]


def _randn(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


# A tensor argument made bad: narrower in its last dim, float64, every other element of a wider
# last dim, on another device (a meta tensor here stands for the extension's other device).
BAD_TENSORS = {
    "size": lambda shape: _randn((*shape[:-1], shape[-1] // 2)),
    "dtype": lambda shape: _randn(shape).double(),
    "strided": lambda shape: _randn((*shape[:-1], 2 * shape[-1]))[..., ::2],
    "device": lambda shape: _randn(shape).to("meta"),
}


@dataclass(frozen=True)
class Compiled:
    """One compiled extension: the backend that loads it, its ops (``torch.ops.<name>``), the
    device its kernels read, and another device that reaches its checks. The cpp ops are registered
    for every dispatch key, so a meta tensor reaches them; the cuda ops for CUDA tensors, so torch
    dispatches a call to them when any tensor is on the GPU, and a host tensor among them reaches
    their checks."""

    backend: str
    ext: native.Extension
    device: torch.device
    other: torch.device

    @property
    def ops(self):
        return getattr(torch.ops, self.ext.name)


@pytest.fixture(scope="module", params=["cpp", "cuda"])
def compiled(request) -> Compiled:
    """Each compiled extension that runs here, loaded (built on first use) by selecting its backend."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("the cuda backend needs a GPU")
    try:
        wan_kernels.set_backend(request.param)
    except ValueError as err:
        pytest.skip(f"the {request.param} backend is unavailable here: {err}")
    finally:
        wan_kernels.set_backend("auto")
    if request.param == "cuda":
        return Compiled("cuda", native.CUDA, torch.device("cuda", torch.cuda.current_device()),
                        torch.device("cpu"))
    return Compiled("cpp", native.CPP, torch.device("cpu"), torch.device("meta"))


def _place(compiled: Compiled, value: object) -> object:
    """A host tensor on the extension's device with its strides (a view stays a view of its moved
    base, which ``.to`` alone would make contiguous), a meta tensor on its other device."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.device.type == "meta":
        return torch.empty(value.shape, dtype=value.dtype, device=compiled.other).normal_()
    if value.layout != torch.strided:
        return value.to(compiled.device)
    base = value if value._base is None else value._base
    return base.to(compiled.device).as_strided(value.size(), value.stride(), value.storage_offset())


def _call(compiled: Compiled, op: str, **bad):
    """Call the raw ``op`` with its good arguments, those named in ``bad`` replaced, placed by
    ``_place``."""
    args = {name: _randn(SHAPES[v]) if v in SHAPES else v for name, v in ARGS[op].items()}
    return getattr(compiled.ops, op)(*(_place(compiled, v) for v in {**args, **bad}.values()))


@pytest.mark.parametrize("op", ARGS)
def test_good_arguments_pass(compiled, op):
    _call(compiled, op)


@pytest.mark.parametrize("kind", BAD_TENSORS)
@pytest.mark.parametrize("op, name", TENSOR_ARGS)
def test_a_bad_tensor_raises_naming_the_op(compiled, op, name, kind):
    bad = BAD_TENSORS[kind](SHAPES[ARGS[op][name]])
    with pytest.raises(RuntimeError, match=f"^wan_kernels::{op}: "):
        _call(compiled, op, **{name: bad})


@pytest.mark.parametrize("op, bad, message", [
    ("layernorm_modulate", {"x": _randn((3, 8))}, "x must be 3-D, got shape [3, 8]"),
    ("layernorm_modulate", {"shift": _randn((2, 2, 8))},
     "shift must be [B, 1, C] or [B, L, C] of x [2, 3, 8], got [2, 2, 8]"),
    ("layernorm_modulate", {"scale": _randn((2, 1, 8)).bfloat16()},
     "scale must be one of [Float], got BFloat16"),
    ("layernorm_modulate", {"eps": -1.0}, "eps must be a non-negative float, got -1"),
    ("layernorm_modulate", {"eps": float("nan")}, "eps must be a non-negative float, got nan"),
    ("layernorm_modulate", {"out_dtype": torch.int8},
     "out_dtype must be one of [Float, BFloat16, Half], got Char"),
    ("layernorm_modulate", {"x": _randn((2, 3, 8)).to("meta")}, "x must be on a {type} device, got {other}"),
    ("gated_residual", {"gate": _randn((2, 1, 8)).to("meta")},
     "gate must be on the device of x ({device}), got {other}"),
    ("gated_residual", {"y": _randn((2, 3, 4))}, "y must have the shape of x [2, 3, 8], got [2, 3, 4]"),
    ("gated_residual_layernorm_modulate", {"x": _randn((2, 3, 8)).bfloat16()},
     "x must be one of [Float], got BFloat16"),
    ("qk_rmsnorm_rope", {"k": _randn((2, 3, 8)).half()}, "k must be one of [Float], got Half"),
    ("qk_rmsnorm_rope", {"num_heads": 0}, "num_heads must be a positive int, got 0"),
    ("qk_rmsnorm_rope", {"num_heads": 3}, "C = 8 must split into 3 heads of an even size"),
    ("qk_rmsnorm_rope", {"weight_q": _randn((6,))}, "weight_q must be [C] = [8], got [6]"),
    ("qk_rmsnorm_rope", {"sin": _randn((3, 1, 4))}, "sin must be a contiguous [L, 1, D/2] = [3, 1, 2] table"),
    ("qk_rmsnorm_rope", {"cos": _randn((3, 1, 4))[..., :2]}, "cos must be a contiguous [L, 1, D/2]"),
    ("rel_l1", {"stride": 0}, "stride must be a positive int, got 0"),
    ("rel_l2", {"a": _randn((8,)), "b": _randn((8,))}, "a must be at least 2-D, got shape [8]"),
    ("residual_apply", {"residual": _randn((2, 2, 8))}, "residual must have the shape of x [2, 3, 8]"),
    ("residual_capture", {"out": torch.tensor(1.0), "inp": torch.tensor(1.0)}, "out must be at least 1-D"),
])
def test_the_message_says_what_is_expected_and_what_came(compiled, op, bad, message):
    """Each message whole: what was expected, then what came (sizes, dtypes, devices, numbers)."""
    with pytest.raises(RuntimeError) as raised:
        _call(compiled, op, **bad)
    expected = message.format(type=compiled.device.type, device=compiled.device, other=compiled.other)
    assert str(raised.value).startswith(f"wan_kernels::{op}: {expected}"), str(raised.value)


def test_a_sparse_tensor_is_refused_naming_the_op(compiled):
    """The cpp ops check the layout themselves; the cuda ops, registered for (dense) CUDA tensors,
    are refused a sparse one by torch's dispatcher (NotImplementedError, as measured on an H100)."""
    sparse = _randn((2, 3, 8)).to_sparse()
    if compiled.ext.cuda:
        expected = ("Could not run 'wan_kernels_cuda::residual_apply' with arguments from the 'SparseCUDA' "
                    "backend")
    else:
        expected = "wan_kernels::residual_apply: residual must be a dense tensor"
    with pytest.raises((RuntimeError, NotImplementedError)) as raised:
        _call(compiled, "residual_apply", residual=sparse)
    assert str(raised.value).startswith(expected), str(raised.value)


def test_the_python_ops_still_raise_their_value_errors(compiled):
    """``wan_kernels.<op>`` checks first, with its own messages; the compiled checks are a backstop."""
    wan_kernels.set_backend(compiled.backend)
    try:
        x, row = _randn((2, 3, 8)).to(compiled.device), _randn((2, 1, 8)).to(compiled.device)
        with pytest.raises(ValueError, match=r"wan_kernels.gated_residual: y must have the shape of x"):
            wan_kernels.gated_residual(x, x[..., :4], row)
        with pytest.raises(ValueError, match="wan_kernels.rel_l1: stride must be a positive int"):
            wan_kernels.rel_l1(x, x, 0)
        torch.testing.assert_close(wan_kernels.residual_apply(x, x), 2 * x)
    finally:
        wan_kernels.set_backend("auto")


def test_the_extension_exports_nothing_of_its_own(compiled):
    library = native._prebuilt(compiled.ext) or native._library(compiled.ext)
    assert own_exports(Path(library)) == []


# Run in its own process, which may crash: the cpp extension built by a compiler that links the
# C++ runtime statically (g++ -static-libstdc++ stands for one whose default does), then a bad call.
STATIC_RUNTIME_CALL = """
import torch
from wan_kernels import native
assert native.load(native.CPP)
x, row = torch.zeros(2, 3, 4), torch.zeros(2, 1, 8)
try:
    torch.ops.wan_kernels_cpp.layernorm_modulate(x, row, row, 1e-6, True, torch.float32)
except RuntimeError as err:
    print(str(err).splitlines()[0])
"""


def test_the_message_is_whole_where_the_compiler_links_its_runtime_statically(tmp_path):
    """The extension links the shared C++ runtime even then (``native.SHARED_CXX_RUNTIME``); linked
    statically, the message stopped at its first number ("... of x [") or the call crashed."""
    compiler = shutil.which("g++")
    if compiler is None or sys.platform != "linux":
        pytest.skip("needs g++ on Linux")
    archive = subprocess.run([compiler, "-print-file-name=libstdc++.a"], capture_output=True, text=True)
    if not Path(archive.stdout.strip()).is_absolute():
        pytest.skip("g++ has no static libstdc++ (libstdc++.a) to link")
    static_cxx = tmp_path / "g++"
    static_cxx.write_text(f'#!/bin/sh\nexec {compiler} -static-libstdc++ "$@"\n')
    static_cxx.chmod(0o755)
    env = {**os.environ, "CXX": str(static_cxx), native.BUILD_DIR_VAR: str(tmp_path / "build"),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", STATIC_RUNTIME_CALL], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ("wan_kernels::layernorm_modulate: shift must be [B, 1, C] or [B, L, C] of "
                                   "x [2, 3, 4], got [2, 1, 8]"), done.stdout
