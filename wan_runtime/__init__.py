"""A faithful, fast inference runtime for the Wan2.2 video-diffusion models."""

from wan_runtime.errors import CheckpointError, InputError, WanError
from wan_runtime.pipelines import load_pipeline

__version__ = "0.1.0"

__all__ = ["CheckpointError", "InputError", "WanError", "__version__", "load_pipeline"]
