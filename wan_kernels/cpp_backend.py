"""The ``cpp`` backend: the C++ CPU kernels of ``csrc/`` (one source file per op family), loaded
through ``wan_kernels.native``. Importing this module needs the extension loaded."""

from __future__ import annotations

import torch

from wan_kernels.dispatch import register
from wan_kernels.native import CPP
from wan_kernels.torch_backend import OPS

for _op in OPS:
    register("cpp", _op)(getattr(getattr(torch.ops, CPP.name), _op))
