"""Writers of small random checkpoints in the exact official on-disk layout.

They give tests and the demo the same files a user downloads, at a size a CPU handles. Every file
is written under a temporary name and renamed, so an interrupted write leaves nothing that looks
complete.
"""

from wan_runtime.tiny_checkpoints.dit import TINY_I2V, TINY_TI2V, random_dit, write_dit
from wan_runtime.tiny_checkpoints.s2v import TINY_S2V, write_s2v_checkpoint, write_wav2vec2
from wan_runtime.tiny_checkpoints.tasks import dit_heads, write_task_checkpoint
from wan_runtime.tiny_checkpoints.text_encoder import write_text_encoder
from wan_runtime.tiny_checkpoints.vae import write_vae21, write_vae22

__all__ = [
    "TINY_I2V",
    "TINY_S2V",
    "TINY_TI2V",
    "dit_heads",
    "random_dit",
    "write_dit",
    "write_s2v_checkpoint",
    "write_task_checkpoint",
    "write_text_encoder",
    "write_vae21",
    "write_vae22",
    "write_wav2vec2",
]
