"""LoRAs merged into the DiT weights as they load (see ``weight_updates`` for why merged).

``Lora`` is what a user asks for; ``read_loras`` reads and checks the files for a task's DiTs;
``lightning_folder.folder_loras`` names the LoRAs of a Wan2.2-Lightning release folder.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wan_runtime.errors import InputError
from wan_runtime.lora.lora_file import LoraFile, check_lora_path
from wan_runtime.lora.weight_updates import WeightUpdates

__all__ = ["Lora", "LoraFile", "WeightUpdates", "check_loras", "read_loras"]


@dataclass(frozen=True)
class Lora:
    """A LoRA to merge into a task's DiT weights.

    ``path``: a ``.safetensors`` LoRA for Wan (official, diffusers or kohya/musubi tensor names).
    ``strength``: its multiplier (1 as trained, 0 leaves the model unchanged, negative subtracts).
    ``expert``: for i2v-A14B, ``"high_noise"`` or ``"low_noise"`` to change that expert alone
    (the Wan2.2-Lightning LoRAs come as one file per expert); ``None`` changes every DiT.
    ``alpha``: the alpha every module's factors merge at (``alpha / rank``) in place of the one
    the file gives; ``None``: the file's.
    """

    path: str | Path
    strength: float = 1.0
    expert: str | None = None
    alpha: float | None = None


def as_loras(loras: Sequence[Lora | str | os.PathLike]) -> list[Lora]:
    """``loras`` as ``Lora`` items, a file's path standing for ``Lora(path)`` (full strength, every
    DiT); ``InputError`` for anything else."""
    if isinstance(loras, (str, os.PathLike, Lora)) or not isinstance(loras, Sequence):
        raise InputError(f"loras must be a list of wan_runtime.lora.Lora (or of LoRA file paths), got "
                         f"{loras!r}; for one LoRA pass [it]")
    items = []
    for lora in loras:
        if not isinstance(lora, (Lora, str, os.PathLike)):
            raise InputError(f"loras must hold wan_runtime.lora.Lora items or LoRA file paths, got {lora!r}")
        items.append(lora if isinstance(lora, Lora) else Lora(lora))
    return items


def check_loras(loras: Sequence[Lora | str | os.PathLike], task: str, dits: Sequence[str]) -> None:
    """Refuse (``InputError``) what is wrong with ``loras`` for ``task``, whose DiTs are named
    ``dits``, without reading the files: the types, strengths, experts, and missing or pickled
    files."""
    for lora in as_loras(loras):
        for name, value in (("strength", lora.strength), ("alpha", lora.alpha)):
            if name == "alpha" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise InputError(f"the {name} of LoRA {lora.path} must be a finite number, got {value!r}")
            if name == "alpha" and value <= 0:
                raise InputError(f"the alpha of LoRA {lora.path} must be > 0, got {value!r} (alpha / rank "
                                 "scales its factors; a negative strength subtracts the LoRA, strength 0 "
                                 "leaves it out)")
        if lora.expert is not None and len(dits) == 1:
            raise InputError(f"{task} has one DiT, so LoRA {lora.path} takes no expert "
                             f"(got {lora.expert!r}); drop it")
        if lora.expert is not None and lora.expert not in dits:
            raise InputError(f"LoRA {lora.path}: unknown expert {lora.expert!r}; {task}'s are "
                             f"{' and '.join(map(repr, dits))} (None: both)")
        if not isinstance(lora.path, (str, Path)):
            raise InputError(f"a LoRA's path must be a str or Path, got {lora.path!r}")
        check_lora_path(Path(lora.path))


def read_loras(
    loras: Sequence[Lora | str | os.PathLike], task: str, dits: Sequence[str]
) -> dict[str, list[tuple[LoraFile, float]]]:
    """Each of ``dits``' LoRA files (each file read and checked once), at their alphas, with their
    strengths (a path given for a LoRA: full strength on every DiT)."""
    check_loras(loras, task, dits)
    files: dict[Path, LoraFile] = {}
    by_dit: dict[str, list[tuple[LoraFile, float]]] = {name: [] for name in dits}
    for lora in as_loras(loras):
        path = Path(lora.path)
        if path not in files:
            files[path] = LoraFile.read(path)
        file = files[path] if lora.alpha is None else files[path].with_alpha(float(lora.alpha))
        for name in dits if lora.expert is None else (lora.expert,):
            by_dit[name].append((file, float(lora.strength)))
    return by_dit
