"""The check every input file gets before it is read: it is there, and it is a file."""

from __future__ import annotations

from pathlib import Path

from wan_runtime.errors import InputError


def file_problem(path: Path, read_once: bool = False) -> str | None:
    """What keeps ``path`` from being read as an input file (``"does not exist"``, ``"is a folder"``,
    or that it is a pipe or device, which inputs read more than once cannot be; a pipe passes
    for a file ``read_once``), or None."""
    if path.is_file() or (read_once and path.is_fifo()):
        return None
    if path.is_dir():
        return "is a folder"
    if path.exists():
        return "is not a regular file (a pipe or a device, read more than once here); save it to a file first"
    return "does not exist"


def require_file(given: str | Path, label: str, expected: str) -> Path:
    """``given`` as a path; ``InputError`` naming ``label`` unless it is a file: an empty one, a
    folder or a missing path is said to be one; ``expected`` (e.g. ``"a PNG, JPEG or WebP file"``)
    says what to pass."""
    if str(given) == "":  # Path("") is the current folder
        raise InputError(f"{label} is empty; pass {expected}")
    path = Path(given)
    problem = file_problem(path)
    if problem is not None:
        raise InputError(f"{label} {path} {problem}; pass {expected}")
    return path


# How a Git LFS pointer starts: what a repository cloned without git-lfs holds in place of its
# large files.
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def lfs_pointer_problem(path: Path) -> str | None:
    """That the file ``path`` is a Git LFS pointer and what to do, or None (also for a file that
    cannot be read: its reader says why)."""
    try:
        with path.open("rb") as file:
            if file.read(len(_LFS_POINTER)) != _LFS_POINTER:
                return None
    except OSError:
        return None
    return ("is a Git LFS pointer, not the file itself (the release was cloned without git-lfs): run "
            "git lfs pull in its folder, or download the file")
