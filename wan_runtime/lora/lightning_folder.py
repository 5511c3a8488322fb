"""The LoRA folders of the Wan2.2-Lightning release, as its ``generate.py --lora_dir`` reads them:
one file per DiT under a fixed name, merged at alpha 8 whatever alpha the file stores."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from wan_runtime.errors import InputError
from wan_runtime.lora import Lora
from wan_runtime.lora.keys import ALPHA, DIFF, DIFF_B, DIFF_M, DOWN, KeyProblem, parse_key
from wan_runtime.lora.lora_file import check_lora_path
from wan_runtime.tasks import HIGH_NOISE, LOW_NOISE

# The alpha the release's generate.py merges every module at (alpha / rank times up @ down).
LIGHTNING_ALPHA = 8.0

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
    return tuple(Lora(folder / name, strength * _release_factor(folder / name), expert)
                 for expert, name in files.items())


def _release_factor(path: Path) -> float:
    """The strength that merges ``path`` as the release does, at ``LIGHTNING_ALPHA`` over each
    module's rank, where ours merges at the alpha the file stores (the rank without one): 1 for
    the release's own files, which store alpha 8. Reads the alphas and the factors' shapes only;
    warns of whole-tensor differences, which the release's merge leaves out and ours merges."""
    check_lora_path(path)
    ranks: dict[str, int] = {}
    alphas: dict[str, torch.Tensor] = {}
    diffs = 0
    try:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                try:
                    key = parse_key(name)
                except KeyProblem:
                    continue  # refused, with its reason, when the file is read
                if key.part == DOWN:
                    ranks[key.module] = f.get_slice(name).get_shape()[0]
                elif key.part == ALPHA:
                    alphas[key.module] = f.get_tensor(name)
                elif key.part in (DIFF, DIFF_B, DIFF_M):
                    diffs += 1
    except (SafetensorError, OSError, RuntimeError) as err:
        raise InputError(f"LoRA file {path} cannot be read as safetensors ({err}); download it "
                         "again") from None
    factors = set()
    for module, rank in ranks.items():
        alpha = alphas.get(module, torch.tensor(float(rank)))
        if alpha.numel() != 1 or not math.isfinite(value := float(alpha.reshape(-1)[0])) or value == 0:
            raise InputError(f"LoRA file {path}: module {module} stores alpha {alpha.tolist()}, not one "
                             "finite non-zero number")
        factors.add(LIGHTNING_ALPHA / value)
    if len(factors) > 1:
        raise InputError(f"LoRA file {path} needs a different scale (alpha / rank) from module to module "
                         f"to be merged as the Wan2.2-Lightning release merges it (alpha "
                         f"{LIGHTNING_ALPHA:g} for all): give it with --lora (or --lora_high_noise / "
                         "--lora_low_noise) to merge it at its own alphas")
    if diffs:
        warnings.warn(f"LoRA file {path} holds {diffs} whole-tensor differences (diff, diff_b, diff_m), "
                      "which the Wan2.2-Lightning release's merge leaves out; they are merged here",
                      stacklevel=3)
    return factors.pop() if factors else 1.0
