"""``verify_checkpoint``: the release's files hashed against what their Hugging Face download
recorded, in both of its layouts (``--local-dir`` records and the cache's blobs)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import wan_runtime
from wan_runtime.checkpoint_verify import release_files, verify_checkpoint
from wan_runtime.errors import CheckpointError
from wan_runtime.file_hashes import GIT_SHA1, SHA256, file_digest
from wan_runtime.models.audio_encoder import WAV2VEC2_DIR
from wan_runtime.tasks import TASKS
from wan_runtime.tiny_checkpoints import write_task_checkpoint

# Hugging Face stores a file through LFS (its ETag the SHA-256) from 10 MB, or by its extension
# (.safetensors, .pth, .bin, ...); the tiny files cross that line by extension alone.
_LFS = (".safetensors", ".pth", ".bin", ".model")


@pytest.fixture(scope="module", params=sorted(TASKS))
def release(request, tmp_path_factory):
    return request.param, write_task_checkpoint(request.param, tmp_path_factory.mktemp(request.param), seed=3)


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "release"))


def _etag(path: Path) -> str:
    """The ETag the hub gives ``path``, computed without the code under test."""
    data = path.read_bytes()
    if path.suffix in _LFS:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _record_local_dir(root: Path, names: list[str], base: Path | None = None) -> None:
    """The records ``hf download --local-dir base`` leaves for the files ``names`` of ``root``,
    written by huggingface_hub's own writer."""
    from huggingface_hub._local_folder import write_download_metadata

    base = root if base is None else base
    for name in names:
        path = root / name
        write_download_metadata(base, path.relative_to(base).as_posix(), "a" * 40, _etag(path))


def _flip_byte(path: Path, offset: int = 4096) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 1]))


def test_release_files_are_every_file_the_task_reads(release, tmp_path):
    task, root = release
    root = _copy(root, tmp_path)
    (root / "README.md").write_text("the model card")
    (root / "assets").mkdir()
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG")
    written = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    listed = release_files(TASKS[task], root)
    # The speech encoder's folder holds its CTC head's vocabulary too, which the features never use.
    speech = {f"{WAV2VEC2_DIR}/{name}" for name in ("config.json", "preprocessor_config.json",
                                                     "model.safetensors")}
    unread = {"README.md", "assets/logo.png"} | {name for name in written
                                                if name.startswith(WAV2VEC2_DIR) and name not in speech}
    assert sorted(listed) == [name for name in written if name not in unread]
    assert len(listed) == len(set(listed))


def test_every_file_matches_its_local_dir_record(release, tmp_path):
    task, root = release
    root = _copy(root, tmp_path)
    names = release_files(TASKS[task], root)
    _record_local_dir(root, names)
    told = []
    result = wan_runtime.verify_checkpoint(task, root, progress=lambda *args: told.append(args))
    assert [file.path for file in result.files] == names
    assert all(file.matches for file in result.files)
    assert {file.kind for file in result.files} == {SHA256, GIT_SHA1}
    assert [(done, total) for _, done, total in told] == [(n, len(names)) for n in range(1, len(names) + 1)]
    assert sorted(file.path for file, _, _ in told) == sorted(names)
    assert f"{len(names)} files" in result.describe()
    assert result.describe().endswith(f"{len(names)} as their downloads recorded")


def test_a_damaged_weight_file_is_named_with_the_download_that_mends_it(release, tmp_path):
    task, root = release
    root = _copy(root, tmp_path)
    names = release_files(TASKS[task], root)
    _record_local_dir(root, names)
    damaged = next(name for name in names if name.endswith(".safetensors"))
    _flip_byte(root / damaged)
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(task, root)
    message = str(err.value)
    assert f"{damaged} (" in message and "DIFFERS from its download record" in message
    assert f"hf download {TASKS[task].release} {damaged} --local-dir {root} --force-download" in message
    assert sum(name in message for name in names) == 1


def test_records_of_a_download_into_a_folder_above(tmp_path):
    root = write_task_checkpoint("ti2v-5B", tmp_path / "downloads" / "Wan2.2-TI2V-5B", seed=4)
    names = release_files(TASKS["ti2v-5B"], root)
    _record_local_dir(root, names, base=tmp_path / "downloads")
    assert all(file.matches for file in verify_checkpoint("ti2v-5B", root).files)


def _hub_cache(root: Path, cache: Path, names: list[str]) -> Path:
    """The release as the hub's cache holds it: blobs named by their ETags and a snapshot of
    relative links to them."""
    snapshot = cache / "snapshots" / ("b" * 40)
    for name in names:
        blob = cache / "blobs" / _etag(root / name)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_the_hub_cache_blobs_are_the_records(tmp_path):
    root = write_task_checkpoint("i2v-A14B", tmp_path / "written", seed=4)
    names = release_files(TASKS["i2v-A14B"], root)
    cache = tmp_path / "hub" / "models--Wan-AI--Wan2.2-I2V-A14B"
    snapshot = _hub_cache(root, cache, names)
    result = verify_checkpoint("i2v-A14B", snapshot)
    assert all(file.matches for file in result.files) and len(result.files) == len(names)
    damaged = "low_noise_model/diffusion_pytorch_model-00001-of-00002.safetensors"
    _flip_byte((snapshot / damaged).resolve())
    with pytest.raises(CheckpointError, match=f"{damaged} .*the Hugging Face cache.*hf download "
                                              f"Wan-AI/Wan2.2-I2V-A14B {damaged} --cache-dir {cache.parent} "
                                              "--force-download"):
        verify_checkpoint("i2v-A14B", snapshot)


def _git_clone(repo: Path, lfs: tuple[str, ...]) -> None:
    """``repo`` as a git-lfs clone holds it: the files of ``lfs`` indexed as the pointers git-lfs
    writes (their working copies the files themselves), the others as blobs."""
    git = shutil.which("git")

    def run(*args: str, data: bytes | None = None) -> str:
        done = subprocess.run([git, "-C", str(repo), *args], input=data, capture_output=True, check=True)
        return done.stdout.decode()

    run("init", "-q")
    for path in sorted(p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts):
        name = path.relative_to(repo).as_posix()
        if path.suffix not in lfs:
            run("add", name)
            continue
        pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{_etag(path)}\n"
                   f"size {path.stat().st_size}\n").encode()
        blob = run("hash-object", "-w", "--stdin", data=pointer).strip()
        run("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_git_clones_index_is_the_record(tmp_path):
    repo = tmp_path / "Wan2.2-I2V-A14B"
    root = write_task_checkpoint("i2v-A14B", repo / "release", seed=4)
    _git_clone(repo, _LFS)
    result = verify_checkpoint("i2v-A14B", root)
    assert all(file.matches for file in result.files)
    kinds = {file.path: (file.kind, file.record) for file in result.files}
    assert kinds["Wan2.1_VAE.pth"] == (SHA256, f"the git-lfs pointer in the git index of {repo.resolve()}")
    assert kinds["high_noise_model/config.json"] == (GIT_SHA1, f"the git index of {repo.resolve()}")
    damaged = "high_noise_model/diffusion_pytorch_model-00002-of-00002.safetensors"
    _flip_byte(root / damaged)
    told = f"{damaged} .*: restore it from the clone .git -C {root} checkout -- {damaged}; git lfs fsck first"
    with pytest.raises(CheckpointError, match=told):
        verify_checkpoint("i2v-A14B", root)


def test_files_without_records_get_their_sha256(release, tmp_path):
    task, root = release
    root = _copy(root, tmp_path)
    names = release_files(TASKS[task], root)
    # A record of another kind than an ETag is no record.
    _record_local_dir(root, names[:1])
    metadata = root / ".cache" / "huggingface" / "download" / f"{names[0]}.metadata"
    metadata.write_text(f"{'a' * 40}\n\"not-an-etag\"\n{time.time()}\n")
    result = verify_checkpoint(task, root)
    assert result.unrecorded == list(result.files) and not result.differing
    for file in result.files:
        assert file.digest == hashlib.sha256((root / file.path).read_bytes()).hexdigest()
        assert file.describe().endswith(f"no download record; sha256 {file.digest}")
    assert f"0 as their downloads recorded, {len(names)} without a record" in result.describe()


def test_git_blob_digest_is_gits(tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    path = tmp_path / "config.json"
    path.write_text('{"dim": 16}\n' * 1000)
    expected = subprocess.run([git, "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert file_digest(path, GIT_SHA1) == expected.stdout.strip()


def test_a_set_stop_ends_the_hashing(tmp_path):
    import threading

    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\0" * 1024)
    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError):
        file_digest(path, SHA256, stop)


def test_a_file_that_cannot_be_read_is_told(release, tmp_path, monkeypatch):
    task, root = release

    def unreadable(path, kind=SHA256, stop=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("wan_runtime.checkpoint_verify.file_digest", unreadable)
    with pytest.raises(CheckpointError, match="cannot be read to verify it .Permission denied.; give this"):
        verify_checkpoint(task, root)
