"""The ``cuda`` backend: the CUDA kernels of ``csrc/cuda/`` (one source file per op family, CUDA
dispatch only), loaded through ``wan_kernels.native``. Importing this module needs the extension
loaded."""

from __future__ import annotations

import torch

from wan_kernels.dispatch import register
from wan_kernels.native import CUDA
from wan_kernels.torch_backend import OPS

for _op in OPS:
    register("cuda", _op)(getattr(getattr(torch.ops, CUDA.name), _op))
