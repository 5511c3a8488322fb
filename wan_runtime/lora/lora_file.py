"""Reading one LoRA file: safetensors only, every tensor named, paired and finite, or a clear error."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from wan_runtime.errors import InputError
from wan_runtime.input_files import file_problem, lfs_pointer_problem
from wan_runtime.lora.adapter_config import (
    PEFT_CONFIG,
    AdapterConfig,
    AdapterConfigProblem,
    PatternTimeout,
    match_deadline,
    saved_config,
)
from wan_runtime.lora.keys import (
    ALPHA,
    DIFF_B,
    DOWN,
    PEFT_PREFIX,
    UP,
    UP_B,
    KeyProblem,
    ModuleNames,
    image_branch,
    parse_key,
)

_PICKLES = (".pt", ".pth", ".ckpt", ".bin")
_SHOWN = 3


def listed(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


def check_lora_path(path: Path) -> None:
    """``InputError`` unless ``path`` is a file that is not a pickle (by its suffix)."""
    problem = file_problem(path)
    if problem is not None:
        raise InputError(f"LoRA file {path} {problem}; check the path")
    if path.suffix.lower() in _PICKLES:
        raise _pickle_refused(path, f"a pickle ({path.suffix})")


def _pickle_refused(path: Path, what: str) -> InputError:
    return InputError(f"LoRA file {path} is {what}, which can run code when loaded; only safetensors LoRAs "
                      "are read: use the .safetensors release of that LoRA")


@dataclass
class ModuleUpdate:
    """What a LoRA changes in one module: the low-rank factors with their alpha, and whole-tensor
    differences of the weight and the bias."""

    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.parts[DOWN].shape[0]

    @property
    def scale(self) -> float:
        """alpha / rank, the factor every trainer applies to up @ down (1 without an alpha)."""
        alpha = self.parts.get(ALPHA)
        return 1.0 if alpha is None else float(alpha) / self.rank


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file's updates by module, as the file names the modules (see ``wan_runtime.lora.keys``).

    ``LoraFile.read`` refuses (``InputError``, naming the file, the tensor and the fix) a missing
    or pickled file, an unreadable one, tensor names of no LoRA kind read here, factors without
    their partner, ranks that disagree or are 0, an alpha that is not one number, and non-finite
    values. The alphas of a file that peft or diffusers saved come from the config saved with it
    (``wan_runtime.lora.adapter_config``).
    """

    path: Path
    modules: Mapping[str, ModuleUpdate]

    @classmethod
    def read(cls, path: str | Path) -> LoraFile:
        path = Path(path)
        check_lora_path(path)
        modules: dict[str, ModuleUpdate] = {}
        problems: list[str] = []
        peft_names = False
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                header = handle.metadata()
                for key in handle.keys():
                    try:
                        parsed = parse_key(key)
                    except KeyProblem as err:
                        problems.append(f"{key!r} {err}")
                        continue
                    tensor = handle.get_tensor(key)
                    problem = _value_problem(tensor, parsed.part)
                    if problem is not None:
                        problems.append(f"{key!r} {problem}")
                    parts = modules.setdefault(parsed.module, ModuleUpdate()).parts
                    if parsed.part in parts:  # e.g. both lora_down and lora_A
                        problems.append(f"{key!r} is a second {parsed.part} of {parsed.module!r}")
                    parts[parsed.part] = tensor
                    peft_names |= key.startswith(PEFT_PREFIX)
        except (SafetensorError, OSError) as err:
            if _pickled(path):
                raise _pickle_refused(path, f"a PyTorch pickle named {path.suffix}") from err
            pointer = lfs_pointer_problem(path)
            if pointer is not None:
                raise InputError(f"LoRA file {path} {pointer}") from err
            raise InputError(
                f"LoRA file {path} is not a readable safetensors file ({err}); download it again"
            ) from err
        for module, update in modules.items():
            problems += _pair_problems(module, update)
        if not problems:
            problems += _saved_alphas(modules, header, path, peft_names)
        if problems:
            raise InputError(f"LoRA file {path} cannot be applied: {listed(problems)}")
        if not modules:
            raise InputError(f"LoRA file {path} holds no tensors; download it again")
        left_out = sorted(module for module in modules if image_branch(module))
        if len(left_out) == len(modules):
            raise InputError(f"LoRA file {path} updates only Wan2.1's CLIP image branch, which Wan2.2's "
                             "DiTs do not have; use a LoRA made for a Wan DiT")
        silent = [module for module, update in modules.items() if DOWN in update.parts and update.scale == 0]
        if silent:
            warnings.warn(
                f"LoRA file {path} stores alpha 0 for {listed(sorted(silent))}, whose factors then merge at "
                "scale 0 (nothing), as ComfyUI and diffusers read it (kohya's trainers take 0 for the rank)",
                stacklevel=2)
        if left_out:
            # Wan2.1 image-to-video LoRAs are applied to Wan2.2 on purpose: the rest of them fits.
            warnings.warn(
                f"LoRA file {path} also updates Wan2.1's CLIP image branch ({listed(left_out)}), which "
                "Wan2.2's DiTs do not have; those modules are left out, the others applied", stacklevel=2)
        return cls(path, {module: update for module, update in modules.items() if module not in left_out})

    def with_alpha(self, alpha: float) -> LoraFile:
        """This file with every module's factors scaled by ``alpha / rank``, whatever alpha it stores
        (the whole-tensor differences unchanged)."""
        return LoraFile(self.path, {
            module: ModuleUpdate({**update.parts, ALPHA: torch.tensor(alpha, dtype=torch.float64)})
            if DOWN in update.parts else update for module, update in self.modules.items()})

    def targets(self, names: ModuleNames, dit: str) -> dict[str, tuple[str, ModuleUpdate]]:
        """Each updated module (as the file names it) -> its official name in the DiT whose
        ``names`` are given, and its update; ``InputError`` naming the modules that DiT lacks
        (``dit`` labels it)."""
        resolved: dict[str, tuple[str, ModuleUpdate]] = {}
        unknown: list[str] = []
        for module, update in self.modules.items():
            official = names.resolve(module)
            if official is None:
                unknown.append(module)
            else:
                resolved[module] = (official, update)
        if unknown:
            raise InputError(
                f"LoRA file {self.path} updates modules that the {dit} DiT does not have "
                f"({listed(sorted(unknown))}): it was made for another model; use a LoRA for this one"
            )
        return resolved


# How torch.save's files start: a zip archive (torch 1.6 on) or a pickle (protocol 2 to 5).
_PICKLE_STARTS = (b"PK\x03\x04", *(bytes([0x80, protocol]) for protocol in range(2, 6)))


def _pickled(path: Path) -> bool:
    """Whether the file ``path`` starts as ``torch.save`` writes."""
    try:
        with path.open("rb") as file:
            return file.read(4).startswith(_PICKLE_STARTS)
    except OSError:
        return False


def _value_problem(tensor: torch.Tensor, part: str) -> str | None:
    """What makes ``tensor``'s values no LoRA's ``part``: not numbers of floating point (but an
    alpha's whole number), or not finite."""
    if not tensor.is_floating_point():
        if part == ALPHA and tensor.dtype != torch.bool and not tensor.is_complex():
            return None
        return f"holds {str(tensor.dtype).removeprefix('torch.')} values, not floating-point numbers"
    # float8 files exist, and isfinite has no float8 kernel; in chunks, so that a file's largest
    # tensor costs its own bytes and no float32 copy of it (a crafted 2 GiB one would take 8 more).
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), _FINITE_CHUNK):
        if not torch.isfinite(flat[start:start + _FINITE_CHUNK].float()).all():
            return "holds NaN or infinite values"
    return None


_FINITE_CHUNK = 1 << 22


def _pair_problems(module: str, update: ModuleUpdate) -> list[str]:
    parts = update.parts
    problems = []
    if (DOWN in parts) != (UP in parts):
        have, lack = (DOWN, UP) if DOWN in parts else (UP, DOWN)
        problems.append(f"{module!r} has a {have} factor but no {lack} factor (the file is incomplete)")
    elif DOWN in parts:
        down, up = parts[DOWN], parts[UP]
        if (down.dim() < 2 or up.dim() < 2 or up.shape[1] != down.shape[0]
                or any(s != 1 for s in up.shape[2:])):
            problems.append(f"{module!r} has factors of shapes {list(down.shape)} (down) and "
                            f"{list(up.shape)} (up), which do not multiply")
        elif down.shape[0] == 0:
            problems.append(f"{module!r} has factors of rank 0 (the file is incomplete)")
    if UP_B in parts and UP not in parts:
        problems.append(f"{module!r} has a bias of lora_B but no factors (the file is incomplete)")
    if UP_B in parts and DIFF_B in parts:
        problems.append(f"{module!r} has both a bias of lora_B and a diff_b, two changes of one bias")
    if ALPHA in parts and DOWN not in parts:
        problems.append(f"{module!r} has an alpha but no factors for it to scale")
    elif ALPHA in parts and parts[ALPHA].numel() != 1:
        problems.append(f"{module!r} has an alpha of shape {list(parts[ALPHA].shape)}, not one number")
    return problems


def _saved_alphas(modules: dict[str, ModuleUpdate], header: dict[str, str] | None, path: Path,
                  peft_names: bool) -> list[str]:
    """Give each module's factors the alpha of the adapter config saved with the file, if any;
    the problems that stop it."""
    try:
        config = saved_config(header, path)
    except AdapterConfigProblem as err:
        return [f"the scale of its factors (alpha / rank) cannot be read: {err}"]
    if config is None:
        if peft_names:
            return [f"its tensor names are peft's ({PEFT_PREFIX}...), whose scale (alpha / rank) peft keeps "
                    f"in the {PEFT_CONFIG} it saved beside the file: put that file beside it, and name "
                    "the LoRA adapter_model.safetensors as peft does"]
        return []
    problems = []
    deadline = match_deadline()
    try:
        for module, update in modules.items():
            problem = _give_alpha(module, update, config, deadline) if DOWN in update.parts else None
            if problem is not None:
                problems.append(problem)
    except PatternTimeout as err:
        return [str(err)]
    return problems


def _give_alpha(module: str, update: ModuleUpdate, config: AdapterConfig, deadline: float) -> str | None:
    if ALPHA in update.parts:
        return (f"{module!r} has an alpha tensor, and {config.source} gives every module its alpha: "
                "which one holds is not known")
    try:
        alpha = config.alpha(module, update.rank, deadline)
    except PatternTimeout:
        raise
    except AdapterConfigProblem as err:
        return str(err)
    # float64: alpha / rank is then the config's scale to a double's rounding.
    update.parts[ALPHA] = torch.tensor(alpha, dtype=torch.float64)
    return None
