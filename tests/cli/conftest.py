"""Fixtures of the argument tests, which run the CLI in-process without its pipelines."""

from __future__ import annotations

import sys

import pytest
from PIL import Image


@pytest.fixture
def no_pipelines(monkeypatch):
    """Importing the pipelines fails: a case that got past validation would exit 1, not 2."""
    monkeypatch.setitem(sys.modules, "wan_runtime.pipelines", None)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "input.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path)
    return path
