"""The digests a git clone of a Hugging Face repository keeps of its files, read from its index:
a file stored through git-lfs is indexed as a pointer that names its SHA-256 (the weights), any
other as the blob whose SHA-1 git gives its bytes (the configs). ``git`` itself reads the index;
without it, or outside a clone, there are none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from wan_runtime.file_hashes import GIT_SHA1, SHA256

# How a git-lfs pointer starts, and the line naming its object; a pointer is some 130 bytes.
_POINTER = b"version https://git-lfs.github.com/spec/"
_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.MULTILINE)
_POINTER_BYTES = 1024
_SECONDS = 60
# A digest a download or clone recorded: its kind, its hex value, and where it was read.
Record = tuple[str, str, str]
GIT_INDEX = "the git index of"


def git_records(root: Path, names: Sequence[str]) -> dict[str, Record]:
    """For each of the files ``names`` (relative to ``root``) that the git clone holding ``root``
    tracks: the kind of its digest, the digest and where it was read; none for another file."""
    git = shutil.which("git")
    if git is None:
        return {}
    top = _run(git, root, "rev-parse", "--show-toplevel")
    if top is None:
        return {}
    top_dir = Path(top.decode().strip())
    # git gives its top folder with links resolved; the files' own links (none in a clone) stay.
    folder = Path(os.path.realpath(root))
    tracked = {Path(os.path.relpath(folder / name, top_dir)).as_posix(): name for name in names}
    listing = _run(git, top_dir, "ls-files", "--stage", "-z", "--", *tracked)
    blobs = {}
    for entry in (listing or b"").split(b"\0"):
        if b"\t" in entry:
            meta, path = entry.split(b"\t", 1)
            blobs[tracked.get(path.decode(errors="replace"))] = meta.split()[1].decode()
    blobs.pop(None, None)
    where = f"{GIT_INDEX} {top_dir}"
    records = {name: (GIT_SHA1, blob, where) for name, blob in blobs.items()}
    for name, oid in _pointer_oids(git, top_dir, blobs).items():
        records[name] = (SHA256, oid, f"the git-lfs pointer in {where}")
    return records


def _pointer_oids(git: str, top: Path, blobs: dict[str, str]) -> dict[str, str]:
    """The SHA-256 each git-lfs pointer among ``blobs`` (name -> blob) names."""
    checked = _run(git, top, "cat-file", "--batch-check", stdin=_lines(blobs.values()))
    sizes = [_size(line) for line in (checked or b"").splitlines()]
    small = [name for name, size in zip(blobs, sizes, strict=False)
             if size is not None and size <= _POINTER_BYTES]
    contents = _run(git, top, "cat-file", "--batch", stdin=_lines(blobs[name] for name in small)) or b""
    oids = {}
    for name in small:
        header, _, contents = contents.partition(b"\n")
        size = _size(header) or 0
        body, contents = contents[:size], contents[size + 1:]
        match = _OID.search(body) if body.startswith(_POINTER) else None
        if match is not None:
            oids[name] = match.group(1).decode()
    return oids


def _size(header: bytes) -> int | None:
    """The size a ``git cat-file`` header gives (``<sha> blob <size>``); None for a missing object."""
    fields = header.split()
    return int(fields[2]) if len(fields) == 3 and fields[2].isdigit() else None


def _lines(blobs: Iterable[str]) -> bytes:
    return "".join(f"{blob}\n" for blob in blobs).encode()


def _run(git: str, folder: Path, *args: str, stdin: bytes | None = None) -> bytes | None:
    try:
        result = subprocess.run([git, "-C", str(folder), *args], input=stdin, capture_output=True,
                                timeout=_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None
