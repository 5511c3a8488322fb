"""Models of the Wan2.2 tasks, loaded from the official checkpoint files."""

from wan_runtime.models.dit import Conditioning, WanModel
from wan_runtime.models.dit_config import DiTConfig

__all__ = ["Conditioning", "DiTConfig", "WanModel"]
