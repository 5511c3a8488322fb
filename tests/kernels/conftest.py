"""Kernel tests run every backend available here; without a GPU, Triton runs in its interpreter."""

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
from tests.kernels.cases import BACKENDS  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend in turn, selected for the test and reset to ``auto`` after it."""
    if request.param not in wan_kernels.available_backends():
        pytest.skip(f"backend {request.param!r} unavailable here (Triton not importable, or no GPU "
                    f"and TRITON_INTERPRET unset)")
    wan_kernels.set_backend(request.param)
    yield request.param
    wan_kernels.set_backend("auto")
