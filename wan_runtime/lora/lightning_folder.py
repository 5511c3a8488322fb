"""The LoRA folders of the Wan2.2-Lightning release, as its ``generate.py --lora_dir`` reads them:
one file per DiT under a fixed name."""

from __future__ import annotations

from pathlib import Path

from wan_runtime.errors import InputError
from wan_runtime.lora import Lora
from wan_runtime.tasks import HIGH_NOISE, LOW_NOISE

# The sampling the release runs its LoRAs with (its configs and generate.py's defaults), for
# i2v-A14B and ti2v-5B alike, by the command line's flag.
LIGHTNING_SAMPLING: dict[str, object] = {
    "sample_solver": "euler", "sample_steps": 4, "sample_shift": 5.0, "sample_guide_scale": 1.0,
}
# The files of a folder by the expert each changes (None: the one DiT).
LIGHTNING_FILES: dict[str, dict[str | None, str]] = {
    "i2v-A14B": {HIGH_NOISE: "high_noise_model.safetensors", LOW_NOISE: "low_noise_model.safetensors"},
    "ti2v-5B": {None: "diffusion_pytorch_model.safetensors"},
}


def folder_loras(folder: str | Path, task: str, strength: float = 1.0) -> tuple[Lora, ...]:
    """The LoRAs of the Wan2.2-Lightning folder ``folder`` for ``task`` at ``strength``: for
    i2v-A14B ``high_noise_model.safetensors`` and ``low_noise_model.safetensors``, one per expert;
    for ti2v-5B ``diffusion_pytorch_model.safetensors``. ``InputError`` names what is missing."""
    folder = Path(folder)
    files = LIGHTNING_FILES.get(task)
    if files is None:
        raise InputError(f"Wan2.2-Lightning LoRA folders hold LoRAs for {' and '.join(LIGHTNING_FILES)}, not "
                         f"{task}; give a {task} LoRA file with --lora")
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise InputError(f"LoRA folder {folder} {what}; give the folder holding "
                         f"{' and '.join(files.values())}")
    missing = [name for name in files.values() if not (folder / name).is_file()]
    if missing:
        raise InputError(f"LoRA folder {folder} lacks {' and '.join(missing)}: a Wan2.2-Lightning {task} "
                         f"folder holds {' and '.join(files.values())}")
    return tuple(Lora(folder / name, strength, expert) for expert, name in files.items())
