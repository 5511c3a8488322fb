"""A faithful, fast inference runtime for the Wan2.2 video-diffusion models."""

from wan_runtime.errors import CheckpointError, InputError, WanError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "InputError", "WanError", "__version__"]
