"""The LoRA folders of the Wan2.2-Lightning release, as its ``generate.py --lora_dir`` reads them:
one file per DiT under a fixed name, each module merged at the alpha the file stores over its rank
(as the release's ``load_and_merge_lora_weight`` has since its commit 803e7e8; its first version
merged every module at alpha 8)."""

from __future__ import annotations

import warnings
from pathlib import Path

from safetensors import SafetensorError, safe_open

from wan_runtime.errors import InputError
from wan_runtime.lora import Lora
from wan_runtime.lora.keys import DIFF, DIFF_B, DIFF_M, UP_B, KeyProblem, parse_key
from wan_runtime.lora.lora_file import check_lora_path
from wan_runtime.tasks import HIGH_NOISE, LOW_NOISE

# The sampling the release runs its LoRAs with (its configs and generate.py's defaults), for
# i2v-A14B and ti2v-5B alike, as ``Pipeline.generate``'s arguments.
LIGHTNING_SAMPLING: dict[str, object] = {
    "sample_solver": "euler", "sampling_steps": 4, "shift": 5.0, "guide_scale": 1.0,
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
    for name in files.values():
        _warn_of_differences(folder / name)
    return tuple(Lora(folder / name, strength, expert) for expert, name in files.items())


def _warn_of_differences(path: Path) -> None:
    """Warn of the whole-tensor differences in ``path``, which the release's merge leaves out and
    ours merges (reading the tensors' names alone)."""
    check_lora_path(path)
    try:
        with safe_open(path, framework="pt") as f:
            names = list(f.keys())
    except (SafetensorError, OSError, RuntimeError) as err:
        raise InputError(f"LoRA file {path} cannot be read as safetensors ({err}); download it "
                         "again") from None
    diffs = 0
    for name in names:
        try:
            diffs += parse_key(name).part in (DIFF, DIFF_B, DIFF_M, UP_B)
        except KeyProblem:
            continue  # refused, with its reason, when the file is read
    if diffs:
        warnings.warn(f"LoRA file {path} holds {diffs} tensor{'s' * (diffs > 1)} besides the factors (diff, "
                      "diff_b, diff_m, lora_B.bias), which the Wan2.2-Lightning release's merge leaves out; "
                      "they are merged here", stacklevel=3)
