"""Tiny official-layout task folders and our pipelines on them, float32 on the CPU."""

from __future__ import annotations

import pytest
import torch

from wan_runtime.pipelines import load_pipeline
from wan_runtime.tiny_checkpoints import write_task_checkpoint


@pytest.fixture(scope="session")
def i2v_root(tmp_path_factory):
    """A complete tiny i2v-A14B folder (two experts)."""
    return write_task_checkpoint("i2v-A14B", tmp_path_factory.mktemp("i2v-A14B"), seed=5)


@pytest.fixture(scope="session")
def ti2v_root(tmp_path_factory):
    """A complete tiny ti2v-5B folder."""
    return write_task_checkpoint("ti2v-5B", tmp_path_factory.mktemp("ti2v-5B"), seed=6)


@pytest.fixture(scope="session")
def s2v_root(tmp_path_factory):
    """A complete tiny s2v-14B folder (S2V DiT, wav2vec2)."""
    return write_task_checkpoint("s2v-14B", tmp_path_factory.mktemp("s2v-14B"), seed=7)


@pytest.fixture(scope="session")
def i2v_pipeline(i2v_root):
    return load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def ti2v_pipeline(ti2v_root):
    return load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
