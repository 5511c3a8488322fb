"""The benchmark tools' tests run Triton in its CPU interpreter where there is no GPU, as the kernel
tests do: importing the kernel tests' backend module first sets that up."""

import tests.kernels.backends  # noqa: F401
