"""How many numbered blocks a checkpoint's tensor names hold, counted rather than read from a
config: a config (or one stray tensor name) that says a billion layers would otherwise have a
billion modules built, on the meta device too, before any shape is compared."""

from __future__ import annotations

import re
from collections.abc import Iterable

# More digits than any model has blocks is no block number (and no huge int to parse).
_NUMBER = r"(\d{1,6})\."


def numbered_blocks(names: Iterable[str], prefix: str) -> int | None:
    """How many blocks the tensor ``names`` hold under ``prefix`` (``"blocks."``: ``blocks.0.*``,
    ``blocks.1.*``, ...) when they are numbered 0 to N-1; None when numbered otherwise (a gap, a
    stray high number)."""
    pattern = re.compile(re.escape(prefix) + _NUMBER)
    found = {int(match.group(1)) for name in names if (match := pattern.match(name))}
    return len(found) if found == set(range(len(found))) else None
