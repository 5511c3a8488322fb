"""Backend selection and the errors of rejected inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import wan_kernels
from tests.kernels.cases import DEVICE, randn
from wan_kernels import dispatch

EPS = 1e-6


def test_torch_is_always_available_and_auto_is_the_default():
    assert "torch" in wan_kernels.available_backends()
    assert wan_kernels.get_backend() == "auto"


def test_auto_picks_cuda_or_triton_on_a_gpu_else_cpp_else_torch():
    available = wan_kernels.available_backends()
    preference = ("cuda", "triton", "torch") if DEVICE.type == "cuda" else ("cpp", "torch")
    expected = next(name for name in preference if name in available)
    assert dispatch.resolve("rel_l1", DEVICE) is dispatch._IMPLS[expected]["rel_l1"]
    assert wan_kernels.backend_for(DEVICE) == expected == wan_kernels.backend_for(DEVICE.type)
    wan_kernels.set_backend("torch")
    try:
        assert wan_kernels.backend_for(DEVICE) == "torch"
    finally:
        wan_kernels.set_backend("auto")


@pytest.mark.parametrize("name, message", [
    ("nope", "unknown wan_kernels backend"),
    pytest.param("cuda", r"not available here; it needs an NVIDIA GPU(,| and a CUDA build of torch)",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the cuda backend builds here")),
])
def test_set_backend_rejects_unknown_and_unavailable(name, message):
    with pytest.raises(ValueError, match=message):
        wan_kernels.set_backend(name)
    assert wan_kernels.get_backend() == "auto"


@pytest.mark.parametrize("value, expected", [("torch", "torch"), ("", "auto")])
def test_environment_variable_selects_the_backend(value, expected):
    env = {**os.environ, dispatch.ENV_VAR: value}
    code = "import wan_kernels; print(wan_kernels.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_environment_variable_rejects_unknown_backend_at_first_use():
    """Importing still works (so a command line can report the bad value as one of its problems);
    the first use names the variable."""
    env = {**os.environ, dispatch.ENV_VAR: "nope"}
    code = "import wan_kernels, torch; wan_kernels.residual_apply(torch.ones(1, 2), torch.ones(1, 2))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ValueError: WAN_KERNELS_BACKEND='nope': unknown wan_kernels backend 'nope'" in out.stderr


@pytest.mark.skipif("triton" not in wan_kernels.available_backends() or torch.cuda.is_available(),
                    reason="needs Triton's CPU interpreter and no GPU")
def test_triton_on_cpu_without_interpreter_says_so(monkeypatch):
    wan_kernels.set_backend("triton")
    try:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        x = randn((1, 2, 64))
        with pytest.raises(ValueError, match="backend 'triton' cannot run on cpu tensors"):
            wan_kernels.residual_apply(x, x)
    finally:
        wan_kernels.set_backend("auto")


@pytest.mark.parametrize("value", ["0", "", "false", "off", "2"])
def test_the_interpreter_variable_is_read_as_triton_reads_it(value, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert not dispatch.triton_interpreted()


TRITON_ON_CPU = """
import os, sys
if sys.argv[1] == "after":
    import triton
    os.environ["TRITON_INTERPRET"] = "1"
import wan_kernels
try:
    wan_kernels.set_backend("triton")
except ValueError as err:
    print(err)
"""


@pytest.mark.skipif(not dispatch._installed("triton") or torch.cuda.is_available(),
                    reason="needs Triton and no GPU")
@pytest.mark.parametrize("when, hint", [
    ("never", "on a CPU Triton needs its interpreter: set TRITON_INTERPRET=1 before importing triton"),
    ("after", "TRITON_INTERPRET=1 was set after triton was imported"),
])
def test_triton_unavailable_on_cpu_says_how_to_interpret_it(when, hint):
    """Set after triton's import, the interpreter would run Triton's own GPU-compiled functions and
    fail inside a kernel; the backend counts as unavailable instead, with the reason."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", dispatch.ENV_VAR)}
    out = subprocess.run([sys.executable, "-c", TRITON_ON_CPU, when], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith(f"wan_kernels backend 'triton' is not available here; {hint}"), out.stdout


def _modulated_inputs(shape=(2, 7, 64)):
    return randn(shape, torch.bfloat16), randn((shape[0], 1, shape[2])), randn((shape[0], 1, shape[2]))


BAD_LAYERNORM_INPUTS = [
    (lambda x, s, c: (x.double(), s, c), "x must be float32 or bfloat16 or float16, got torch.float64"),
    (lambda x, s, c: (x[0], s, c), "x must be 3-D"),
    (lambda x, s, c: (x.transpose(1, 2).contiguous().transpose(1, 2), s, c), "x must be contiguous in"),
    (lambda x, s, c: (x, s.bfloat16(), c), "shift must be float32"),
    (lambda x, s, c: (x, s, c[:, :, :32]), r"scale must be \[B, 1, C\] or \[B, L, C\]"),
    (lambda x, s, c: (x, s.to("meta"), c), "tensors must be on one device"),
]


@pytest.mark.parametrize("bad, message", BAD_LAYERNORM_INPUTS)
def test_layernorm_modulate_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match="wan_kernels.layernorm_modulate: " + message):
        wan_kernels.layernorm_modulate(*bad(*_modulated_inputs()), EPS)


def test_other_ops_reject_bad_input():
    x, shift, _ = _modulated_inputs()
    residual = randn(x.shape)
    cases = [
        (lambda: wan_kernels.gated_residual(x.double(), x, shift), "gated_residual: x must be float32"),
        (lambda: wan_kernels.gated_residual_layernorm_modulate(x, x, shift, shift, shift, EPS),
         "gated_residual_layernorm_modulate: x must be float32, got torch.bfloat16"),
        (lambda: wan_kernels.gated_residual(residual, x[:, :3], shift), "y must have the shape of x"),
        (lambda: wan_kernels.gated_residual_layernorm_modulate(residual, x, shift, shift, shift, -1.0),
         "eps must be a non-negative float"),
        (lambda: wan_kernels.layernorm_modulate(x, shift, shift, EPS, out_dtype=torch.int8),
         "out_dtype must be float32"),
        (lambda: wan_kernels.rel_l1(x, x, 0), "rel_l1: stride must be a positive int"),
        (lambda: wan_kernels.rel_l2(x[0, 0], x[0, 0]), "rel_l2: a must have at least 2 dimensions"),
        (lambda: wan_kernels.residual_apply(x, residual[:, :2]), "residual must have the shape of x"),
        (lambda: wan_kernels.residual_capture(x.int(), residual), "out must be float32"),
        (lambda: wan_kernels.qk_rmsnorm_rope(x, x, shift[0, 0], shift[0, 0], x, x, 3, EPS),
         "C = 64 must split into 3 heads of an even size"),
        (lambda: wan_kernels.qk_rmsnorm_rope(x, x, shift[0, 0], shift[0, 0], randn((7, 16)), randn((7, 16)),
                                             2, EPS), "cos must be a contiguous"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_the_registered_ops_check_their_inputs(backend):
    """``torch.ops.wan_kernels.*`` called directly (or from a traced graph) refuses what the
    functions refuse, on every backend, before any kernel reads out of bounds."""
    x, shift, _ = _modulated_inputs()
    residual = randn(x.shape)
    ops = torch.ops.wan_kernels
    cases = [
        (lambda: ops.layernorm_modulate(x, shift[:, :, :8], shift, EPS, True, torch.float32),
         r"layernorm_modulate: shift must be \[B, 1, C\]"),
        (lambda: ops.rel_l1(residual, residual[:, :2], 1), "rel_l1: b must have the shape of a"),
        (lambda: ops.residual_apply(residual, residual[:1]), "residual_apply: residual must have the shape"),
        (lambda: ops.gated_residual(residual, x, shift[0]), "gated_residual: gate must be 3-D"),
        (lambda: ops.layernorm_modulate(x, shift, shift, float("nan"), True, torch.float32),
         "eps must be a non-negative float, got nan"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_bad_layouts_and_tables_are_named():
    x, shift, _ = _modulated_inputs()
    with pytest.raises(ValueError, match="residual_capture: out must be a dense tensor, got layout torch.sp"):
        wan_kernels.residual_capture(x.float().to_sparse(), x)
    weight = torch.ones(64)
    table = randn((1, 1, 16)).expand(7, 1, 16)
    with pytest.raises(ValueError, match=r"cos must be a contiguous .* and strides \(0, 16, 1\)"):
        wan_kernels.qk_rmsnorm_rope(x, x, weight, weight, table, table.contiguous(), 2, EPS)


def test_functions_name_a_non_tensor_argument():
    x = randn((1, 4, 8))
    gate = randn((1, 1, 8))
    cases = [
        (lambda: wan_kernels.gated_residual(x.cpu().numpy(), x, gate),
         "gated_residual: x must be a tensor, got"),
        (lambda: wan_kernels.rel_l1(x, [1.0]), "rel_l1: b must be a tensor, got list"),
        (lambda: wan_kernels.residual_capture(x, 2.0), "residual_capture: inp must be a tensor, got float"),
        (lambda: wan_kernels.layernorm_modulate(x, gate, None, EPS), "layernorm_modulate: scale must be a"),
        (lambda: wan_kernels.layernorm_modulate(x, gate, gate, EPS, round_to_input="False"),
         "layernorm_modulate: round_to_input must be True or False, got 'False'"),
        (lambda: wan_kernels.layernorm_modulate(x, gate, gate, EPS, out_dtype="bfloat16"),
         "layernorm_modulate: out_dtype must be float32 or bfloat16 or float16, got 'bfloat16'"),
        (lambda: wan_kernels.gated_residual_layernorm_modulate(x, x, gate, gate, gate, EPS, out_dtype=None),
         "gated_residual_layernorm_modulate: out_dtype must be float32 or bfloat16 or float16, got None"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


BROKEN_TRITON = """
import wan_kernels
print(wan_kernels.available_backends())
try:
    wan_kernels.set_backend("triton")
except ValueError as err:
    print(err)
"""


def test_a_triton_that_does_not_import_is_not_available(tmp_path):
    """Installed is not enough: a broken install fails at import, and would otherwise fail in every
    op call of a backend that counted as available."""
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text('raise ImportError("triton is broken")\n')
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    env.pop(dispatch.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", BROKEN_TRITON], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert "triton" not in out[0]
    assert out[1].startswith("wan_kernels backend 'triton' is not available here; importing triton failed "
                             "(ImportError: triton is broken)"), out


def test_an_uninstalled_triton_is_named(monkeypatch):
    monkeypatch.setattr(dispatch, "_installed", lambda module: module != "triton")
    assert dispatch._unavailable_reason("triton") == "; Triton is not installed (pip install triton)"
