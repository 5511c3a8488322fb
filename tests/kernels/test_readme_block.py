"""The README's "In your own DiT block" example runs on every backend available here and gives the
`torch` backend's result (the plain references) within the bfloat16 tolerance."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import wan_kernels
from tests.kernels.tolerances import assert_matches

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text().split("### In your own DiT block", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run(backend: str) -> dict:
    wan_kernels.set_backend(backend)
    try:
        torch.manual_seed(0)
        scope: dict = {}
        exec(compile(_example(), str(README), "exec"), scope)  # noqa: S102 - the README's own example
        return scope
    finally:
        wan_kernels.set_backend("auto")


def test_the_readme_block_matches_the_references(backend):
    expected, actual = _run("torch"), _run(backend)
    assert actual["x"].shape == (1, 256, 1024) and actual["x"].dtype == torch.float32
    assert_matches(actual["x"], expected["x"], torch.bfloat16)
