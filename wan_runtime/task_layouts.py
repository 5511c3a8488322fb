"""Where each task's files live in an official checkpoint folder, as the official configs name them."""

from __future__ import annotations

from dataclasses import dataclass

from wan_runtime.models.t5_checkpoint import CHECKPOINT_FILE
from wan_runtime.models.text_encoder import TOKENIZER_DIR


@dataclass(frozen=True)
class TaskLayout:
    """Relative paths inside a task's checkpoint folder.

    ``dit_folders`` lists the DiT folders, highest noise first: the two i2v-A14B experts, or the
    root itself (``"."``) for ti2v-5B.
    """

    vae_file: str
    dit_folders: tuple[str, ...]
    t5_file: str = CHECKPOINT_FILE
    tokenizer_dir: str = TOKENIZER_DIR


TASK_LAYOUTS = {
    "i2v-A14B": TaskLayout(vae_file="Wan2.1_VAE.pth", dit_folders=("high_noise_model", "low_noise_model")),
    "ti2v-5B": TaskLayout(vae_file="Wan2.2_VAE.pth", dit_folders=(".",)),
}
