"""Atomic file writes for the checkpoint writers: a temporary name, then a rename."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then rename it to ``path``."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save ``tensors`` as a safetensors file (``format: pt`` metadata, as torch writers do)."""
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
