"""Kernel tests run every backend available here; without a GPU, Triton runs in its interpreter."""

from tests.kernels.backends import backend  # noqa: F401
