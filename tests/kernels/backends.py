"""The ``backend`` fixture of the kernel tests (and of the DiT's per-backend tests).

Import this module before anything imports Triton: without a GPU it switches Triton to its CPU
interpreter.
"""

from __future__ import annotations

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    # Triton reads it when a function is decorated with triton.jit, its own library functions
    # (tl.sum, ...) included, so it must be set before anything imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if importlib.util.find_spec("triton"):
        # Import now, before a test that switches the interpreter off makes torch import it.
        import triton.language  # noqa: F401

import pytest  # noqa: E402

import wan_kernels  # noqa: E402
from tests.kernels.cases import BACKENDS, DEVICE  # noqa: E402
from wan_kernels import dispatch  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend that runs on the tests' device in turn (``cpp`` on a CPU, ``cuda`` on a GPU),
    selected for the test (which builds its extension on first use) and reset to ``auto`` after it."""
    if not dispatch._runs_on(request.param, DEVICE):
        pytest.skip(f"backend {request.param!r} does not run on {DEVICE.type} tensors")
    try:
        wan_kernels.set_backend(request.param)
    except ValueError as err:
        pytest.skip(f"backend {request.param!r} unavailable here: {err}")
    yield request.param
    wan_kernels.set_backend("auto")
