"""Session fixtures: tiny official-layout checkpoints written by the package's own writer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wan_runtime.tiny_checkpoints import TINY_I2V, TINY_TI2V, write_dit


@pytest.fixture(scope="session")
def i2v_dit_dir(tmp_path_factory):
    """A sharded three-layer i2v expert folder (like high_noise_model/)."""
    return write_dit(tmp_path_factory.mktemp("i2v") / "high_noise_model", replace(TINY_I2V, num_layers=3),
                     seed=1, shards=2)


@pytest.fixture(scope="session")
def ti2v_dit_dir(tmp_path_factory):
    """A single-file ti2v folder (like the Wan2.2-TI2V-5B root)."""
    return write_dit(tmp_path_factory.mktemp("ti2v"), TINY_TI2V, seed=2)
