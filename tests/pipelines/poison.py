"""Make a model go numerically wrong on purpose, to test what notices it."""

from __future__ import annotations

import torch


def poison(module: torch.nn.Module, monkeypatch, from_call: int) -> None:
    """``module``'s forward returns NaN from its ``from_call``-th call (0-based) on."""
    forward, calls = module.forward, []

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls.append(None)
        return out if len(calls) <= from_call else torch.full_like(out, float("nan"))

    monkeypatch.setattr(module, "forward", poisoned)
