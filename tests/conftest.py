"""Session fixtures: tiny official-layout checkpoints written by the package's own writer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wan_runtime.tiny_checkpoints import TINY_I2V, TINY_TI2V, write_dit, write_task_checkpoint


@pytest.fixture(scope="session")
def i2v_dit_dir(tmp_path_factory):
    """A sharded three-layer i2v expert folder (like high_noise_model/)."""
    return write_dit(tmp_path_factory.mktemp("i2v") / "high_noise_model", replace(TINY_I2V, num_layers=3),
                     seed=1, shards=2)


@pytest.fixture(scope="session")
def ti2v_dit_dir(tmp_path_factory):
    """A single-file ti2v folder (like the Wan2.2-TI2V-5B root)."""
    return write_dit(tmp_path_factory.mktemp("ti2v"), TINY_TI2V, seed=2)


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
