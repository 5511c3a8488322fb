"""A faithful, fast inference runtime for the Wan2.2 video-diffusion models."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wan_runtime.errors import CheckpointError, InputError, NumericalError, WanError

if TYPE_CHECKING:
    from wan_runtime.checkpoint_verify import verify_checkpoint
    from wan_runtime.lora import Lora
    from wan_runtime.pipelines import load_pipeline

__version__ = "0.1.0"

__all__ = ["CheckpointError", "InputError", "Lora", "NumericalError", "WanError", "__version__",
           "load_pipeline", "verify_checkpoint"]

# The pipelines (and the models under them) load on first use, so the CLI can check its
# arguments, and `import wan_runtime` stays cheap, without importing them.
_LAZY = {
    "load_pipeline": "wan_runtime.pipelines",
    "Lora": "wan_runtime.lora",
    "verify_checkpoint": "wan_runtime.checkpoint_verify",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wan_runtime' has no attribute {name!r}")
