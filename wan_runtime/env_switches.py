"""The runtime's on/off environment variables, read one way: ``1`` or ``0``, unset or empty (as
``export NAME=`` leaves it) meaning the default, anything else an ``InputError`` naming both values."""

from __future__ import annotations

import os

from wan_runtime.errors import InputError


def env_switch(name: str, default: bool, on: str, off: str) -> bool:
    """Whether the environment variable ``name`` is 1 (``on`` says what that does) rather than 0
    (``off``); ``default`` where it is unset or empty."""
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    if value not in ("0", "1"):
        defaults = (", the default", "") if default else ("", ", the default")
        raise InputError(f"{name} must be 1 ({on}{defaults[0]}) or 0 ({off}{defaults[1]}), got {value!r}")
    return value == "1"
