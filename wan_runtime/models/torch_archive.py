"""Reading the official ``.pth`` weight files (T5, VAEs): checked cheaply first, then memory-mapped.

``torch.save`` writes a zip archive whose central directory, the list of its members, is at the
end of the file, so a truncated download has none. Reading that directory touches the file's
last bytes only, never a tensor, so a pipeline checks every such file before loading any model;
``torch.load`` would find the damage only when its turn comes, after other models have loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from wan_runtime.errors import CheckpointError

# Every zip archive starts with a local file header.
_ZIP_MAGIC = b"PK\x03\x04"
# torch.save before 1.6 starts with its magic number pickled with protocol 2 (a 10-byte long).
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def check_torch_archive(path: Path, what: str, fix: str, legacy_ok: bool = False) -> None:
    """Raise ``CheckpointError`` (``"<what> <path> ...; <fix>"``) unless the file ``path`` is a
    complete ``torch.save`` zip archive; only its start and its central directory are read.
    ``legacy_ok`` lets a file in the format of torch before 1.6 pass (it has no directory to check;
    its start is), for readers that take it; anything else (a Git LFS pointer, an HTML error page) is
    refused."""
    try:
        with path.open("rb") as file:
            start = file.read(len(_LEGACY_MAGIC))
        if not start.startswith(_ZIP_MAGIC):
            if legacy_ok and start == _LEGACY_MAGIC:
                return
            # Memory-mapped loading needs the zip format, in which the official files are.
            raise CheckpointError(f"{what} {path} is not a torch.save zip archive (it is damaged or of "
                                  f"another format); {fix}")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{what} {path} is truncated or corrupt (its zip directory, at the end of "
                              f"the file, is missing or damaged); {fix}") from err
    except OSError as err:
        raise CheckpointError(f"{what} {path} cannot be read ({err.strerror}); {fix}") from err
    if not any(name.endswith("/data.pkl") for name in names):
        raise CheckpointError(f"{what} {path} is a zip archive but not a torch.save file (no data.pkl in "
                              f"it); {fix}")


def load_state_dict(path: Path, what: str, fix: str) -> dict[str, torch.Tensor]:
    """The memory-mapped tensors of the ``torch.save`` file ``path``, read with
    ``weights_only=True``; it must hold a flat name -> tensor dict. Callers pass ``path`` through
    ``check_torch_archive`` first (and before loading any other model)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch reports damaged archives and refused pickles with many types
        first_line = next(iter(str(err).splitlines()), "")
        raise CheckpointError(f"{what} {path} cannot be loaded as plain tensors ({type(err).__name__}: "
                              f"{first_line}): it is unreadable, corrupt or holds more than a state dict; "
                              f"{fix}") from err
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{what} {path} is not a state dict of tensors (it holds a "
                              f"{type(state).__name__}); {fix}")
    return state
