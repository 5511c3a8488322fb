"""Reading the official ``.pth`` weight files (T5, VAEs): checked cheaply first, then memory-mapped.

``torch.save`` writes a zip archive whose central directory, the list of its members, is at the
end of the file, so a truncated download has none. Reading that directory touches the file's
last bytes only, never a tensor, so a pipeline checks every such file before loading any model;
``torch.load`` would find the damage only when its turn comes, after other models have loaded.

Damage inside the file (bytes overwritten, a bad sector) keeps the directory whole, and torch
checks no record's CRC-32 (its zip reader is built without), so the tensors load as values no model
was trained with: a NaN at the first step, or a video of noise. ``load_state_dict`` checks every
record's local header and CRC-32 itself, reading the records once as the load does anyway (a few
seconds for the 11 GB T5).
"""

from __future__ import annotations

import functools
import mmap
import re
import struct
import zipfile
import zlib
from pathlib import Path

import torch

from wan_runtime.errors import CheckpointError
from wan_runtime.input_files import lfs_pointer_problem

# Every zip archive starts with a local file header.
_ZIP_MAGIC = b"PK\x03\x04"
# torch.save before 1.6 starts with its magic number pickled with protocol 2 (a 10-byte long).
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# A zip member's local header (30 bytes): its signature, 22 bytes, its name's and extra field's lengths.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_LOCAL_MAGIC = b"PK\x03\x04"
# The CRC of a record is computed over slices of this size, so that the mapped pages read for one
# are released to the page cache before the next.
_CRC_CHUNK = 1 << 26


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
            pointer = lfs_pointer_problem(path)
            if pointer is not None:
                raise CheckpointError(f"{what} {path} {pointer}")
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


def damaged_records(path: Path) -> list[str]:
    """The members of the zip archive ``path`` whose local header is damaged or whose stored bytes
    do not match their CRC-32 (torch stores every record uncompressed; a CRC of 0 on a record that
    is not empty is taken as none written, as ``torch.serialization.set_crc32_options(False)``
    writes); reading it memory-mapped, as the tensors are loaded. Read once per process while the
    file is unchanged: a pipeline's checks and its loading both ask (seconds for an 11 GB T5)."""
    stat = path.stat()
    return list(_damaged_records(path, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _damaged_records(path: Path, size: int, mtime_ns: int) -> tuple[str, ...]:
    damaged = []
    with zipfile.ZipFile(path) as archive, path.open("rb") as file, \
            mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as data:
        # In file order, each record after the last one's end: a directory whose entries point
        # into one another's bytes (crafted, to have one gigabyte summed a thousand times) is damaged.
        last_end = 0
        for info in sorted(archive.infolist(), key=lambda info: info.header_offset):
            if info.compress_type != zipfile.ZIP_STORED:
                continue
            if info.header_offset < last_end or info.header_offset + _LOCAL_HEADER.size > len(mapped):
                damaged.append(info.filename)
                continue
            magic, name_length, extra_length = _LOCAL_HEADER.unpack_from(mapped, info.header_offset)
            start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            end = start + info.compress_size
            if magic != _LOCAL_MAGIC or end > len(mapped):
                damaged.append(info.filename)
                continue
            last_end = end
            if info.CRC == 0 and info.compress_size:
                continue
            crc = 0
            for chunk in range(start, end, _CRC_CHUNK):
                crc = zlib.crc32(data[chunk:min(end, chunk + _CRC_CHUNK)], crc)
            if crc != info.CRC:
                damaged.append(info.filename)
    return tuple(damaged)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REFUSED = re.compile(r"WeightsUnpickler error: (.*?)(?: Please use|$)", re.MULTILINE)


def load_failure(err: Exception) -> str:
    """What ``torch.load(weights_only=True)``'s error ``err`` says went wrong, in one line: for a
    pickle refused, what it would have run, without torch's advice to load it unchecked (which
    runs the file's code)."""
    refused = _REFUSED.search(str(err))
    line = refused.group(1) if refused else next(iter(str(err).strip().splitlines()), "")
    return _ANSI.sub("", line).strip()[:300]


def load_state_dict(path: Path, what: str, fix: str) -> dict[str, torch.Tensor]:
    """The memory-mapped tensors of the ``torch.save`` file ``path``, read with
    ``weights_only=True``; it must hold a flat name -> tensor dict, and each record its CRC-32
    (``damaged_records``). Callers pass ``path`` through ``check_torch_archive`` first (and before
    loading any other model)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch reports damaged archives and refused pickles with many types
        raise CheckpointError(f"{what} {path} cannot be loaded as plain tensors ({type(err).__name__}: "
                              f"{load_failure(err)}): it is unreadable, corrupt or holds more than a state "
                              f"dict; {fix}") from err
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{what} {path} is not a state dict of tensors (it holds a "
                              f"{type(state).__name__}); {fix}")
    damaged = damaged_records(path)
    if damaged:
        raise CheckpointError(f"{what} {path} is corrupt: {len(damaged)} of its records do not match their "
                              f"checksums (the first: {damaged[0]}), so bytes inside it were changed after "
                              f"it was written; {fix}")
    return state
