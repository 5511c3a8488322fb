"""Models of the Wan2.2 tasks, loaded from the official checkpoint files."""

from wan_runtime.models.dit import Conditioning, WanModel
from wan_runtime.models.dit_config import DiTConfig
from wan_runtime.models.text_encoder import TextEncoder, load_text_encoder
from wan_runtime.models.vae_codec import WanVAE
from wan_runtime.models.vae_loading import load_vae

__all__ = ["Conditioning", "DiTConfig", "TextEncoder", "WanModel", "WanVAE", "load_text_encoder", "load_vae"]
