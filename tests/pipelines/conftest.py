"""Our pipelines on the tiny task folders (``tests/conftest.py``), float32 on the CPU."""

from __future__ import annotations

import pytest
import torch

from wan_runtime.pipelines import load_pipeline


@pytest.fixture(scope="session")
def i2v_pipeline(i2v_root):
    return load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def ti2v_pipeline(ti2v_root):
    return load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
