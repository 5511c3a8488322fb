"""Reading DiT weights from the official safetensors layout, strictly and without a second copy.

A folder holds either ``diffusion_pytorch_model.safetensors`` or the shards named in
``diffusion_pytorch_model.safetensors.index.json``. Tensors are read one at a time from the
memory-mapped files, converted to their parameter's dtype and device, and assigned into a module
built on the meta device, so peak memory is the model plus one tensor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from wan_runtime.errors import CheckpointError
from wan_runtime.input_files import lfs_pointer_problem
from wan_runtime.lora import WeightUpdates
from wan_runtime.models.fp8_weights import Fp8Linear

SINGLE_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"
_REDOWNLOAD = "download that file again from the official release"


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives and what it is."""

    file: Path
    shape: tuple[int, ...]


def _read_index(index_path: Path) -> list[Path]:
    try:
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError,
            RecursionError) as err:
        raise CheckpointError(
            f"{index_path} is not a valid safetensors index ({type(err).__name__}: {err}); {_REDOWNLOAD}"
        ) from err
    # A shard is a file of the folder, by its bare name: not a path into another folder.
    elsewhere = [repr(name) for name in names
                 if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..")]
    if elsewhere:
        raise CheckpointError(f"{index_path} names shards that are no file names of its folder "
                              f"({', '.join(elsewhere[:3])}); {_REDOWNLOAD}")
    shards = [index_path.parent / name for name in names]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise CheckpointError(
            f"{index_path.parent} lacks shard(s) {', '.join(missing)} named in {index_path.name}; "
            "download the missing files"
        )
    return shards


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a DiT folder, single-file or sharded."""
    if (folder / INDEX_FILE).is_file():
        return _read_index(folder / INDEX_FILE)
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    if any(folder.glob("diffusion_pytorch_model-*-of-*.safetensors")):
        raise CheckpointError(f"{folder} holds the DiT's shards but not their index, {INDEX_FILE}; download "
                              "that file too")
    raise CheckpointError(
        f"{folder} holds neither {SINGLE_FILE} nor {INDEX_FILE}; point to the folder that holds "
        "the DiT weights (for i2v-A14B: high_noise_model/ or low_noise_model/)"
    )


# Windows of a weight file compared to tell two copies of one DiT from two DiTs of one shape.
_SAMPLES, _SAMPLE_BYTES = 8, 1 << 16


def same_weights(first: list[Path], second: list[Path]) -> bool:
    """Whether the weight files ``first`` and ``second`` (``checkpoint_files`` of two DiT folders)
    are copies of one DiT: the same sizes and the same bytes where sampled (a millisecond's
    reading; two DiTs of one architecture share their headers, not their weights)."""
    if len(first) != len(second):
        return False
    for a, b in zip(first, second, strict=True):
        size = a.stat().st_size
        if b.stat().st_size != size:
            return False
        with a.open("rb") as one, b.open("rb") as other:
            for offset in range(0, size, max(1, size // _SAMPLES)):
                one.seek(offset)
                other.seek(offset)
                if one.read(_SAMPLE_BYTES) != other.read(_SAMPLE_BYTES):
                    return False
    return True


def read_entries(files: list[Path]) -> dict[str, TensorEntry]:
    """Every tensor's file and shape, read from the headers only."""
    entries: dict[str, TensorEntry] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    if key in entries:
                        raise CheckpointError(
                            f"tensor {key!r} is stored in both {entries[key].file} and {file}; "
                            f"the checkpoint is inconsistent: {_REDOWNLOAD}"
                        )
                    entries[key] = TensorEntry(file, tuple(handle.get_slice(key).get_shape()))
        except (SafetensorError, OSError) as err:
            raise _unreadable(file, err) from err
    return entries


def check_keys(model: nn.Module, entries: dict[str, TensorEntry], folder: Path) -> None:
    """Raise one error listing every missing, unexpected or mis-shaped tensor."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    problems = []
    missing = sorted(set(expected) - set(entries))
    unexpected = sorted(set(entries) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(
            f"unexpected tensors: {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}"
        )
    for name in sorted(set(expected) & set(entries)):
        if expected[name] != entries[name].shape:
            problems.append(
                f"{name} in {entries[name].file.name} has shape {list(entries[name].shape)}, "
                f"config.json implies {list(expected[name])}"
            )
    if problems:
        raise CheckpointError(
            f"{folder} does not match its config.json: " + "; ".join(problems[:10])
            + ". Use the config.json and weights of one official release, unmodified"
        )


def load_parameters(
    model: nn.Module, entries: dict[str, TensorEntry], device: torch.device | str,
    updates: WeightUpdates | None = None, merge_device: torch.device | str | None = None,
    host_prefixes: tuple[str, ...] = (), when_loaded: Mapping[str, Callable[[], None]] | None = None,
) -> None:
    """Fill a meta-device ``model`` from ``entries``, each parameter in its own dtype, on
    ``device``, or on the CPU for names that start with one of ``host_prefixes``; the
    parameters that ``updates`` change get their LoRA changes, computed on ``merge_device``
    (default ``device``), before that dtype's rounding. An ``Fp8Linear``'s weight is quantized
    there too (``Fp8Linear.set_weight``). ``when_loaded``: for a name prefix, what to run as soon
    as every parameter under it has loaded (FSDP shards a block then: a file lists each block's
    tensors one after another, so a block or two are whole at a time, two where a block is split
    between two files)."""
    by_file: dict[Path, list[str]] = {}
    for name, entry in entries.items():
        by_file.setdefault(entry.file, []).append(name)
    params = dict(model.named_parameters())
    hooks = dict(when_loaded or {})
    pending = {prefix: sum(name.startswith(prefix) for name in params) for prefix in hooks}
    for file, names in by_file.items():
        # Only reading the file can fail for the file's sake: a hook's error is its own.
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
        except (SafetensorError, OSError) as err:
            raise _unreadable(file, err) from err
        with handle:
            for name in names:
                target = "cpu" if name.startswith(host_prefixes) else device
                try:
                    value = handle.get_tensor(name)
                except (SafetensorError, OSError) as err:
                    raise _unreadable(file, err) from err
                if updates is not None and name in updates:
                    wide = value.to(device=merge_device or device, dtype=torch.float32)
                    value = updates.apply(name, wide)
                owner, _, leaf = name.rpartition(".")
                module = model.get_submodule(owner)
                if isinstance(module, Fp8Linear) and leaf == "weight":
                    module.set_weight(value.to(merge_device or device), target)
                else:
                    value = value.to(device=target, dtype=params[name].dtype)
                    module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
                for prefix in hooks:
                    if name.startswith(prefix):
                        pending[prefix] -= 1
                        if not pending[prefix]:
                            hooks[prefix]()


def _unreadable(file: Path, err: Exception) -> CheckpointError:
    pointer = lfs_pointer_problem(file)
    if pointer is not None:
        return CheckpointError(f"{file} {pointer}")
    return CheckpointError(f"{file} is unreadable or truncated ({err}); {_REDOWNLOAD}")
