"""A complete tiny checkpoint folder of a task, laid out as the official release."""

from __future__ import annotations

from pathlib import Path

from wan_runtime.errors import InputError
from wan_runtime.tasks import TASKS
from wan_runtime.tiny_checkpoints.dit import TINY_I2V, TINY_TI2V, write_dit
from wan_runtime.tiny_checkpoints.s2v import TINY_S2V, write_s2v_checkpoint
from wan_runtime.tiny_checkpoints.text_encoder import write_text_encoder
from wan_runtime.tiny_checkpoints.vae import write_vae21, write_vae22

_DIT_CONFIGS = {"i2v-A14B": TINY_I2V, "ti2v-5B": TINY_TI2V}
_VAE_WRITERS = {"i2v-A14B": write_vae21, "ti2v-5B": write_vae22}


def write_task_checkpoint(task: str, root: str | Path, seed: int = 0) -> Path:
    """Write ``Wan2.2-I2V-A14B/``-like (``task="i2v-A14B"``) or ``Wan2.2-TI2V-5B/``-like
    (``task="ti2v-5B"``) or ``Wan2.2-S2V-14B/``-like (``task="s2v-14B"``, see
    ``write_s2v_checkpoint``) contents into ``root``: the umT5 file and tokenizer folder, the
    task's VAE file and its DiT folder(s), each DiT sharded in two as the release is. Returns
    ``root``."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; tiny checkpoints exist for {', '.join(TASKS)}")
    if task == "s2v-14B":
        return write_s2v_checkpoint(root, seed=seed)
    root = Path(root)
    spec = TASKS[task]
    write_text_encoder(root, dim=_DIT_CONFIGS[task].text_dim, seed=seed)
    _VAE_WRITERS[task](root / spec.vae_file, seed=seed)
    for i, folder in enumerate(spec.dit_folders):
        write_dit(root / folder, _DIT_CONFIGS[task], seed=seed + 1 + i, shards=2)
    return root


def dit_heads(task: str) -> int:
    """The attention heads of the DiTs ``write_task_checkpoint(task, ...)`` writes."""
    return TINY_S2V.num_heads if task == "s2v-14B" else _DIT_CONFIGS[task].num_heads
