"""The demo's cached checkpoint: written once, reused, and never left half written."""

from __future__ import annotations

import numpy as np
import pytest

from wan_runtime import __version__, demo
from wan_runtime.tasks import check_checkpoint_dir


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "wan_runtime" / "demo"


def test_written_once_then_reused(cache, monkeypatch):
    folder, written = demo.demo_checkpoint("ti2v-5B")
    assert (folder, written) == (cache / f"ti2v-5B-v{__version__}", True)
    check_checkpoint_dir("ti2v-5B", folder)

    def must_not_write(*args, **kwargs):
        raise AssertionError("the cached checkpoint was written again")

    monkeypatch.setattr(demo, "write_task_checkpoint", must_not_write)
    assert demo.demo_checkpoint("ti2v-5B") == (folder, False)
    assert [p.name for p in cache.iterdir()] == [folder.name]


def test_interrupted_write_leaves_no_cache(cache, monkeypatch):
    def interrupted(task, root, seed):
        (root / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "write_task_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.demo_checkpoint("i2v-A14B")
    assert list(cache.iterdir()) == []


def test_incomplete_cache_is_written_again(cache):
    stale = cache / f"ti2v-5B-v{__version__}"
    stale.mkdir(parents=True)
    (stale / "Wan2.2_VAE.pth").write_bytes(b"left by hand")
    with pytest.warns(UserWarning, match=f"the cached checkpoint {stale} is incomplete; writing it again"):
        assert demo.demo_checkpoint("ti2v-5B") == (stale, True)
    check_checkpoint_dir("ti2v-5B", stale)
    assert (stale / "Wan2.2_VAE.pth").stat().st_size > 1000
    assert [p.name for p in cache.iterdir()] == [stale.name]


def test_a_cached_file_changed_since_it_was_written_is_written_again(cache):
    folder, _ = demo.demo_checkpoint("i2v-A14B")
    shard = folder / "low_noise_model" / "diffusion_pytorch_model-00001-of-00002.safetensors"
    written = shard.read_bytes()
    damaged = bytearray(written)
    damaged[40] ^= 0xFF  # inside the header's JSON: loading would blame the release
    shard.write_bytes(damaged)
    with pytest.warns(UserWarning, match=f"the cached checkpoint {folder} has files changed since it was "
                                         f"written .low_noise_model/{shard.name}.; writing it again"):
        assert demo.demo_checkpoint("i2v-A14B") == (folder, True)
    assert shard.read_bytes() == written
    assert demo.demo_checkpoint("i2v-A14B") == (folder, False)


def test_a_cache_without_its_record_is_written_again(cache):
    folder, _ = demo.demo_checkpoint("ti2v-5B")
    (folder / ".sha256.json").unlink()
    with pytest.warns(UserWarning, match="has no readable record of its files .*; writing it again"):
        assert demo.demo_checkpoint("ti2v-5B") == (folder, True)
    assert demo.demo_checkpoint("ti2v-5B") == (folder, False)


def test_demo_image():
    image = demo.demo_image()
    assert (image.mode, image.size) == ("RGB", (128, 96))
    assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 100  # a picture, not a flat colour

