"""``--verify_checkpoint``: the release hashed before the run, each file told; one that differs
from its download's record stops the run before a model loads."""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest

from tests.cli.helpers import launch_env
from wan_runtime.batch_file import resolve_jobs
from wan_runtime.cli_args import InvalidArguments
from wan_runtime.cli_parser import build_parser
from wan_runtime.generate import main


@pytest.fixture
def release(ti2v_root, tmp_path, monkeypatch):
    """A copy of the tiny ti2v-5B release whose DiT weights have ``--local-dir`` download records."""
    monkeypatch.chdir(tmp_path)
    root = shutil.copytree(ti2v_root, tmp_path / "Wan2.2-TI2V-5B")
    for weights in root.glob("*.safetensors"):
        metadata = root / ".cache" / "huggingface" / "download" / f"{weights.name}.metadata"
        metadata.parent.mkdir(parents=True, exist_ok=True)
        etag = hashlib.sha256(weights.read_bytes()).hexdigest()
        metadata.write_text(f"{'a' * 40}\n{etag}\n{time.time()}\n")
    return root


@pytest.fixture
def no_loading(monkeypatch):
    def loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("wan_runtime.pipelines.loading.load_text_encoder", loading)


def test_a_dry_run_verifies_then_checks(release, capsys, no_loading):
    assert main(["--ckpt_dir", str(release), "--prompt", "a fox", "--dry_run", "--verify_checkpoint"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"verify: hashing the files ti2v-5B reads from {release}"
    told = [line for line in out if line.startswith("verify: [")]
    assert len(told) == 9 and told[-1].startswith("verify: [9/9] ")
    assert sum("matches its download record (sha256)" in line for line in told) == 2
    vae = hashlib.sha256((release / "Wan2.2_VAE.pth").read_bytes()).hexdigest()
    assert any(line.endswith(f"no download record; sha256 {vae}") for line in told)
    assert out[10].startswith("verify: 9 files, ") and out[10].endswith(
        "2 as their downloads recorded, 7 without a record (compare each sha256 told with the release's "
        "page)")
    assert out[11].startswith("dry run: every argument and file is in order")


def test_a_file_that_differs_stops_the_run_before_loading(release, capsys, no_loading):
    shard = release / "diffusion_pytorch_model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x80
    shard.write_bytes(data)
    assert main(["--ckpt_dir", str(release), "--prompt", "a fox", "--verify_checkpoint"]) == 2
    captured = capsys.readouterr()
    assert "dry run" not in captured.out and not list(release.parent.glob("*.mp4"))
    [error] = captured.err.splitlines()
    assert error.startswith(f"error: {release}: {shard.name} (")
    assert "DIFFERS from its download record" in error
    assert error.endswith(f"download it again (hf download Wan-AI/Wan2.2-TI2V-5B {shard.name} --local-dir "
                          f"{release} --force-download)")


def _problems(*argv: str) -> list[str]:
    parser = build_parser()
    with pytest.raises(InvalidArguments) as caught:
        resolve_jobs(parser, parser.parse_args(list(argv)))
    return caught.value.problems


def test_not_with_the_demo_or_under_torchrun(ti2v_root, monkeypatch):
    assert _problems("--demo", "--verify_checkpoint") == [
        "--verify_checkpoint checks a downloaded release against its download's records, and --demo's "
        "checkpoint is written here: drop one of the two"]
    launch_env(monkeypatch, rank=0, world=2)
    assert _problems("--ckpt_dir", str(ti2v_root), "--verify_checkpoint", "--ulysses_size", "2") == [
        "--verify_checkpoint reads the whole release: verify it once without torchrun (python -m "
        "wan_runtime.generate --task TASK --ckpt_dir DIR --verify_checkpoint --dry_run), then launch without "
        "the flag"]
