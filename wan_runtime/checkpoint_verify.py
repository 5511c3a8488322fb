"""``verify_checkpoint``: every file a task reads from its release folder, hashed and compared with
the digest its download recorded.

A download that went wrong inside a file (a flipped bit, a block of another file) passes every
check of names, headers and sizes; the DiT's safetensors carry no checksum of their own. Hugging
Face's downloader keeps each file's ETag, which is the file's SHA-256 for one stored through LFS or
Xet (the weights) and its git blob SHA-1 for a small one: ``hf download --local-dir`` in
``.cache/huggingface/download/<file>.metadata`` beside the files, its cache as the name of the blob
each of a snapshot's links points to; a git clone keeps the same in its index
(``wan_runtime.git_records``). A file with no such record (ModelScope keeps none) gets its SHA-256
told, to compare with the one the release's page shows.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from wan_runtime.errors import CheckpointError
from wan_runtime.file_hashes import GIT_SHA1, SHA256, file_digest
from wan_runtime.git_records import GIT_INDEX, Record, git_records
from wan_runtime.models.audio_encoder import WAV2VEC2_CONFIGS, WAV2VEC2_WEIGHTS
from wan_runtime.models.safetensors_checkpoint import INDEX_FILE, checkpoint_files
from wan_runtime.tasks import TaskSpec, check_checkpoint_dir

# Hugging Face's ETag of a file: its SHA-256 (LFS, Xet) or the SHA-1 of its git blob.
_ETAG_KINDS = {64: SHA256, 40: GIT_SHA1}
_HEX = re.compile(r"[0-9a-f]+")
_METADATA = Path(".cache", "huggingface", "download")
# Threads hashing files at once: hashlib lets go of the GIL, and a server's disk reads faster
# than one core hashes.
_WORKERS = 4


@dataclass(frozen=True)
class FileDigest:
    """One release file: its path relative to the folder, its size, the digest its download
    recorded (``recorded``, of kind ``kind``; None without a record), where that record is
    (``record``), and the file's own digest of that kind (SHA-256 without a record)."""

    path: str
    size: int
    kind: str
    digest: str
    recorded: str | None = None
    record: str | None = None

    @property
    def matches(self) -> bool | None:
        """Whether the file is what its download recorded; None without a record."""
        return None if self.recorded is None else self.digest == self.recorded

    def describe(self) -> str:
        """One line for the user: the file, its size and how it compares."""
        head = f"{self.path} ({_size(self.size)})"
        if self.matches is None:
            return f"{head}: no download record; sha256 {self.digest}"
        if self.matches:
            return f"{head}: matches its download record ({self.kind})"
        return (f"{head}: DIFFERS from its download record in {self.record} ({self.kind} {self.recorded}, "
                f"the file's {self.digest})")


@dataclass(frozen=True)
class CheckpointVerification:
    """What ``verify_checkpoint`` found: every file it hashed, and how long that took."""

    root: Path
    files: tuple[FileDigest, ...]
    seconds: float

    @property
    def differing(self) -> list[FileDigest]:
        """The files that are not what their download recorded."""
        return [file for file in self.files if file.matches is False]

    @property
    def unrecorded(self) -> list[FileDigest]:
        """The files without a download record (their SHA-256 is told instead)."""
        return [file for file in self.files if file.matches is None]

    def describe(self) -> str:
        """A line summing up: files, bytes, time and how they compared."""
        size = sum(file.size for file in self.files)
        rate = size / 2**30 / max(self.seconds, 1e-3)
        matching = len(self.files) - len(self.differing) - len(self.unrecorded)
        counts = [f"{matching} as their downloads recorded"]
        if self.differing:
            counts.append(f"{len(self.differing)} not")
        if self.unrecorded:
            counts.append(f"{len(self.unrecorded)} without a record (compare each sha256 told with the "
                          "release's page)")
        return (f"{len(self.files)} files, {_size(size)} hashed in {self.seconds:.1f} s "
                f"({rate:.2f} GiB/s): {', '.join(counts)}")


def _size(count: int) -> str:
    unit = next(unit for unit in (3, 2, 1, 0) if count >= 1 << 10 * unit or not unit)
    return f"{count} bytes" if not unit else f"{count / (1 << 10 * unit):.1f} {' KMG'[unit]}iB"


def release_files(spec: TaskSpec, root: Path) -> list[str]:
    """The files of the release folder ``root`` that ``spec``'s task reads, relative to it: the T5,
    the tokenizer's folder, the VAE, each DiT's config, index and weights, and the speech
    encoder's configs and the one weight file transformers takes (``CheckpointError`` for a DiT
    folder without its weights)."""
    names = [spec.t5_file, *_folder_files(root, spec.tokenizer_dir), spec.vae_file]
    for folder in spec.dit_folders:
        index = [INDEX_FILE] if (root / folder / INDEX_FILE).is_file() else []
        weights = [os.path.relpath(path, root) for path in checkpoint_files(root / folder)]
        names += [os.path.normpath(os.path.join(folder, name)) for name in ("config.json", *index)] + weights
    if spec.audio_dir is not None:
        # The first of the weight files that is there, as transformers takes it.
        present = [name for name in WAV2VEC2_WEIGHTS if (root / spec.audio_dir / name).is_file()]
        names += [str(Path(spec.audio_dir) / name) for name in (*WAV2VEC2_CONFIGS, *present[:1])]
    return list(dict.fromkeys(Path(name).as_posix() for name in names))


def _folder_files(root: Path, folder: str) -> list[str]:
    return sorted(str(Path(folder) / path.name) for path in (root / folder).iterdir()
                  if path.is_file() and not path.name.startswith("."))


def download_record(root: Path, name: str) -> Record | None:
    """The digest Hugging Face's downloader recorded for the file ``name`` of ``root``: its kind,
    its hex value and where it was found (the ``.metadata`` file of a ``--local-dir`` download in
    the folder or one above it, or the cache's blob that the file links to); None without one."""
    path = root / name
    if path.is_symlink():
        blob = path.resolve()
        if blob.parent.name == "blobs":
            kind = _etag_kind(blob.name)
            if kind is not None:
                return kind, blob.name, f"the Hugging Face cache ({blob})"
    absolute = Path(os.path.abspath(path))
    for folder in absolute.parents:
        metadata = folder / _METADATA / f"{absolute.relative_to(folder)}.metadata"
        if metadata.is_file():
            return _metadata_record(metadata)
    return None


def _metadata_record(metadata: Path) -> Record | None:
    try:
        lines = metadata.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    etag = lines[1].strip().strip('"').lower() if len(lines) > 1 else ""
    kind = _etag_kind(etag)
    return None if kind is None else (kind, etag, str(metadata))


def _etag_kind(etag: str) -> str | None:
    return _ETAG_KINDS.get(len(etag)) if _HEX.fullmatch(etag) else None


def verify_checkpoint(
    task: str, ckpt_dir: str | Path, *, progress: Callable[[FileDigest, int, int], None] | None = None,
) -> CheckpointVerification:
    """Hash every file ``task`` reads from its release folder ``ckpt_dir`` (``release_files``)
    and compare each with the digest its Hugging Face download recorded (``download_record``) or,
    for a git clone, its index (``git_records``), several files at once; ``progress`` is called
    with each file as it is done, how many are done and how many there are. Raises
    ``CheckpointError`` naming every file that differs, with the command that fetches them again;
    a file without a record is not an error (its SHA-256 is in the result)."""
    spec = check_checkpoint_dir(task, ckpt_dir)
    root = Path(ckpt_dir)
    names = release_files(spec, root)
    start = time.perf_counter()
    records = {name: download_record(root, name) for name in names}
    unrecorded = [name for name, record in records.items() if record is None]
    if unrecorded:  # a git clone's own records, read in a few calls of git for all the files
        records.update(git_records(root, unrecorded))
    done = []
    try:
        for file in _hashed(root, names, records):
            done.append(file)
            if progress is not None:
                progress(file, len(done), len(names))
    except OSError as err:
        raise CheckpointError(f"{err.filename} cannot be read to verify it ({err.strerror}); give this user "
                              "read access to the release folder") from err
    order = {name: index for index, name in enumerate(names)}
    result = CheckpointVerification(root, tuple(sorted(done, key=lambda file: order[file.path])),
                                    time.perf_counter() - start)
    if result.differing:
        raise CheckpointError(_differing_message(spec, result))
    return result


def _hashed(root: Path, names: list[str], records: dict[str, Record | None]) -> Iterator[FileDigest]:
    # The largest first, so that the last to finish is a small one.
    names = sorted(names, key=lambda name: -(root / name).stat().st_size)
    # Set when the caller stops early (an error, Ctrl-C): the threads stop within a chunk, and the
    # process does not wait for gigabytes more of hashing.
    stop = threading.Event()
    with ThreadPoolExecutor(min(_WORKERS, len(names))) as pool:
        futures = [pool.submit(_hash_one, root, name, records.get(name), stop) for name in names]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            stop.set()
            for future in futures:
                future.cancel()


def _hash_one(root: Path, name: str, record: Record | None, stop: threading.Event) -> FileDigest:
    path = root / name
    kind = SHA256 if record is None else record[0]
    digest = file_digest(path, kind, stop)
    size = path.stat().st_size
    if record is None:
        return FileDigest(name, size, kind, digest)
    return FileDigest(name, size, kind, digest, record[1], record[2])


def _differing_message(spec: TaskSpec, result: CheckpointVerification) -> str:
    differing = result.differing
    names = " ".join(shlex.quote(file.path) for file in differing)
    them = "it" if len(differing) == 1 else "them"
    told = (f"{result.root}: {'; '.join(file.describe() for file in differing)}; damaged in the download "
            "or changed since")
    if all(GIT_INDEX in (file.record or "") for file in differing):
        return (f"{told}: restore {them} from the clone (git -C {shlex.quote(str(result.root))} checkout -- "
                f"{names}; git lfs fsck first checks the clone's own copies of the weights)")
    # --force-download: the downloader trusts a file its record still matches by time and ETag,
    # which a file damaged in place (or on the way, with its record written after) keeps.
    blob = (result.root / differing[0].path).resolve()
    where = (f"--cache-dir {shlex.quote(str(blob.parents[2]))}" if blob.parent.name == "blobs" else
             f"--local-dir {shlex.quote(str(result.root))}")
    return f"{told}: download {them} again (hf download {spec.release} {names} {where} --force-download)"
