"""The compiled ops check their own arguments (``csrc/checks.h``): called directly, as users of the
CMake library do, ``torch.ops.wan_kernels_cpp.<op>`` given a tensor of the wrong size, dtype,
layout or device raises a ``RuntimeError`` naming the op instead of reading out of bounds.
(The CUDA ops share the checks; ``csrc/tests/test_cpp_ops.cpp``'s ``bad_input`` runs them on a GPU.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import wan_kernels
from tests.kernels.exports import own_exports
from wan_kernels import native

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
# last dim, on another device.
BAD_TENSORS = {
    "size": lambda shape: _randn((*shape[:-1], shape[-1] // 2)),
    "dtype": lambda shape: _randn(shape).double(),
    "strided": lambda shape: _randn((*shape[:-1], 2 * shape[-1]))[..., ::2],
    "device": lambda shape: _randn(shape).to("meta"),
}


@pytest.fixture(scope="module")
def ops():
    """``torch.ops.wan_kernels_cpp``, loaded (built on first use) by selecting the ``cpp`` backend."""
    try:
        wan_kernels.set_backend("cpp")
    except ValueError as err:
        pytest.skip(f"the cpp backend is unavailable here: {err}")
    finally:
        wan_kernels.set_backend("auto")
    return getattr(torch.ops, native.CPP.name)


def _call(ops, op: str, **bad):
    """Call the raw ``op`` with its good arguments, those named in ``bad`` replaced."""
    args = {name: _randn(SHAPES[v]) if v in SHAPES else v for name, v in ARGS[op].items()}
    return getattr(ops, op)(*{**args, **bad}.values())


@pytest.mark.parametrize("op", ARGS)
def test_good_arguments_pass(ops, op):
    _call(ops, op)


@pytest.mark.parametrize("kind", BAD_TENSORS)
@pytest.mark.parametrize("op, name", TENSOR_ARGS)
def test_a_bad_tensor_raises_naming_the_op(ops, op, name, kind):
    bad = BAD_TENSORS[kind](SHAPES[ARGS[op][name]])
    with pytest.raises(RuntimeError, match=f"^wan_kernels::{op}: "):
        _call(ops, op, **{name: bad})


@pytest.mark.parametrize("op, bad, message", [
    ("layernorm_modulate", {"x": _randn((3, 8))}, "x must be 3-D, got shape [3, 8]"),
    ("layernorm_modulate", {"shift": _randn((2, 2, 8))},
     "shift must be [B, 1, C] or [B, L, C] of x [2, 3, 8], got [2, 2, 8]"),
    ("layernorm_modulate", {"scale": _randn((2, 1, 8)).bfloat16()},
     "scale must be one of [Float], got BFloat16"),
    ("layernorm_modulate", {"eps": -1.0}, "eps must be a non-negative float, got -1"),
    ("layernorm_modulate", {"eps": float("nan")}, "eps must be a non-negative float, got nan"),
    ("residual_apply", {"residual": _randn((2, 3, 8)).to_sparse()}, "residual must be a dense tensor"),
    ("layernorm_modulate", {"out_dtype": torch.int8},
     "out_dtype must be one of [Float, BFloat16, Half], got Char"),
    ("layernorm_modulate", {"x": _randn((2, 3, 8)).to("meta")}, "x must be on a cpu device, got meta"),
    ("gated_residual", {"gate": _randn((2, 1, 8)).to("meta")},
     "gate must be on the device of x (cpu), got meta"),
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
def test_the_message_says_what_is_expected_and_what_came(ops, op, bad, message):
    with pytest.raises(RuntimeError) as raised:
        _call(ops, op, **bad)
    assert str(raised.value).startswith(f"wan_kernels::{op}: {message}"), str(raised.value)


def test_the_python_ops_still_raise_their_value_errors(ops):
    """``wan_kernels.<op>`` checks first, with its own messages; the compiled checks are a backstop."""
    wan_kernels.set_backend("cpp")
    try:
        x, row = _randn((2, 3, 8)), _randn((2, 1, 8))
        with pytest.raises(ValueError, match=r"wan_kernels.gated_residual: y must have the shape of x"):
            wan_kernels.gated_residual(x, x[..., :4], row)
        with pytest.raises(ValueError, match="wan_kernels.rel_l1: stride must be a positive int"):
            wan_kernels.rel_l1(x, x, 0)
        torch.testing.assert_close(wan_kernels.residual_apply(x, x), 2 * x)
    finally:
        wan_kernels.set_backend("auto")


def test_the_extension_exports_nothing_of_its_own(ops):
    library = native._prebuilt(native.CPP) or native.build_dir(native.CPP) / f"{native.CPP.name}.so"
    assert own_exports(Path(library)) == []
