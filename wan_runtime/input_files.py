"""The check every input file gets before it is read: it is there, and it is a file."""

from __future__ import annotations

from pathlib import Path

from wan_runtime.errors import InputError


def require_file(given: str | Path, label: str, expected: str) -> Path:
    """``given`` as a path; ``InputError`` naming ``label`` unless it is a file: an empty one, a
    folder or a missing path is said to be one; ``expected`` (e.g. ``"a PNG, JPEG or WebP file"``)
    says what to pass."""
    if str(given) == "":  # Path("") is the current folder
        raise InputError(f"{label} is empty; pass {expected}")
    path = Path(given)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(f"{label} {path} {problem}; pass {expected}")
    return path
