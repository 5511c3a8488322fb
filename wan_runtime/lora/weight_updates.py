"""The changes of several LoRAs to one DiT's weights, merged into each weight as it loads.

Merging rather than running the LoRA beside each layer keeps the model what it was: the same
shapes and kernels, so ``torch.compile``, CUDA graphs, FSDP and the step caches see a plain DiT
and a step costs what it did. Each changed tensor is read from the checkpoint, widened to float32,
given ``strength * alpha / rank * up @ down`` (and any ``diff``) of every LoRA in float32, and
rounded once to the parameter's dtype, so a bfloat16 model carries no second rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from wan_runtime.errors import InputError
from wan_runtime.lora.keys import DIFF, DIFF_B, DIFF_M, DOWN, UP, UP_B, ModuleNames
from wan_runtime.lora.lora_file import LoraFile, ModuleUpdate, listed

_WHAT = {DOWN: "weight", UP_B: "bias", DIFF: "weight", DIFF_B: "bias", DIFF_M: "modulation"}


class WeightUpdates:
    """``(LoRA file, strength)`` pairs checked against one DiT's parameter ``shapes`` (name ->
    shape; ``dit`` labels the DiT in messages), at strength 0 too, though nothing of theirs is
    merged then. Raises ``InputError`` naming every module the DiT lacks or whose shape the LoRA
    does not fit."""

    def __init__(self, loras: Sequence[tuple[LoraFile, float]], shapes: Mapping[str, tuple[int, ...]],
                 dit: str) -> None:
        names = ModuleNames(shapes)
        self._changes: dict[str, list[tuple[str, ModuleUpdate, float, LoraFile]]] = {}
        for lora, strength in loras:
            problems = []
            named: dict[tuple[str, str], str] = {}
            for module, (official, update) in lora.targets(names, dit).items():
                for part in update.parts.keys() & _WHAT.keys():
                    param = names.target(official, part)
                    if param is None:
                        problems.append(f"{module!r} has no {_WHAT[part]} in the {dit} DiT")
                        continue
                    # One module under two naming schemes would be applied twice (a bias by either name).
                    kind = {DIFF_M: DIFF, UP_B: DIFF_B}.get(part, part)
                    twin = named.setdefault((param, kind), module)
                    if twin != module:
                        problems.append(f"{twin!r} and {module!r} both change {param}")
                    fits = _fit_problem(update, part, shapes[param])
                    if fits:
                        problems.append(f"{module!r}: {fits}")
                    if strength != 0:
                        self._changes.setdefault(param, []).append((part, update, strength, lora))
            if problems:
                raise InputError(
                    f"LoRA file {lora.path} does not fit the {dit} DiT ({listed(problems)}): it was made "
                    "for another model or size; use a LoRA for this one"
                )

    def __contains__(self, name: str) -> bool:
        return name in self._changes

    def __len__(self) -> int:
        """The parameters the LoRAs change (none of those at strength 0)."""
        return len(self._changes)

    def apply(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` (float32, the parameter ``name`` as stored, a tensor of the caller's own) with
        every LoRA's change to it added in place."""
        changes = self._changes.get(name, ())
        for part, update, strength, _ in changes:
            if part == DOWN:
                up = update.parts[UP].to(weight.device, torch.float32).flatten(1)
                down = update.parts[DOWN].to(weight.device, torch.float32).flatten(1)
                change = (up @ down).view(weight.shape)
            else:
                change = update.parts[part].to(weight.device, torch.float32)
            # lora_B's bias belongs to the low-rank product, scaled with it; a difference is not.
            weight.add_(change, alpha=strength * (update.scale if part in (DOWN, UP_B) else 1.0))
        if not torch.isfinite(weight).all():
            files = list(dict.fromkeys(str(lora.path) for *_, lora in changes))
            which = (f"LoRA file {files[0]} makes {name} infinite: its" if len(files) == 1 else
                     f"LoRA files {', '.join(files)} make {name} infinite: their")
            raise InputError(f"{which} values are too large for the weight's numbers; lower the strength or "
                             "use another file")
        return weight


def _fit_problem(update: ModuleUpdate, part: str, shape: tuple[int, ...]) -> str | None:
    if part == DOWN:
        down, up = update.parts[DOWN], update.parts[UP]
        if up.shape[0] != shape[0] or tuple(down.shape[1:]) != tuple(shape[1:]):
            return (f"factors of shapes {list(up.shape)} @ {list(down.shape)} cannot change a weight "
                    f"of shape {list(shape)}")
        return None
    if tuple(update.parts[part].shape) != tuple(shape):
        return f"{part} of shape {list(update.parts[part].shape)} for a {_WHAT[part]} of shape {list(shape)}"
    return None
