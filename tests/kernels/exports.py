"""What a compiled wan_kernels library exports of its own, read with ``nm`` (binutils)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def own_exports(library: Path) -> list[str]:
    """The demangled dynamic symbols ``library`` defines in the ``wan_kernels`` namespace: none, when
    it is built with hidden visibility, so two libraries compiling the same inline functions of
    csrc/checks.h never bind to each other's copy."""
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not on PATH")
    listed = subprocess.run(["nm", "-D", "--defined-only", "-C", str(library)], capture_output=True,
                            text=True, check=True).stdout
    return [line for line in listed.splitlines() if "wan_kernels::" in line]
