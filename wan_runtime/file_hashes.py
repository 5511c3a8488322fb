"""A file's digest, read in large chunks: its SHA-256, or the SHA-1 git gives its blob (the two
kinds of Hugging Face's ETags)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

SHA256, GIT_SHA1 = "sha256", "git-sha1"
_CHUNK = 16 << 20


def file_digest(path: Path, kind: str = SHA256, stop: threading.Event | None = None) -> str:
    """The hex digest of the file ``path``: its SHA-256, or (``GIT_SHA1``) the SHA-1 git gives the
    blob of its bytes, as ``git hash-object`` does. Once ``stop`` is set it stops reading and
    raises ``InterruptedError``."""
    size = path.stat().st_size
    sha = hashlib.sha256() if kind == SHA256 else hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    buffer = bytearray(_CHUNK)
    with path.open("rb", buffering=0) as file, memoryview(buffer) as view:
        while read := file.readinto(buffer):
            if stop is not None and stop.is_set():
                raise InterruptedError(f"stopped hashing {path}")
            sha.update(view[:read])
    return sha.hexdigest()
