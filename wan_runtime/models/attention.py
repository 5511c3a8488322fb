"""The one place the DiT calls attention.

Inputs are [B, L, N, D] (tokens, heads, head dim), unmasked: the runtime batches samples of one
shape, so no sequence is padded. ``scaled_dot_product_attention`` is the default; flash-attn 3 or 2
is used on CUDA when importable and the dtype is half precision (the official model's choice).
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F


def _import_optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_FLASH3 = _import_optional("flash_attn_interface")
_FLASH2 = _import_optional("flash_attn")
_HALF = (torch.float16, torch.bfloat16)


def available_backends() -> list[str]:
    """The backends ``attention`` can use here: ``sdpa`` always, flash-attn ones when importable."""
    return ["sdpa"] + [name for name, module in (("flash2", _FLASH2), ("flash3", _FLASH3)) if module]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Softmax attention with scale ``1/sqrt(D)``; returns [B, Lq, N, D] in ``q.dtype``.

    ``backend`` is ``"auto"`` (flash-attn when available and applicable, else SDPA), ``"sdpa"``,
    ``"flash2"`` or ``"flash3"``.
    """
    if backend == "auto":
        usable = q.is_cuda and q.dtype in _HALF
        backend = "flash3" if usable and _FLASH3 else "flash2" if usable and _FLASH2 else "sdpa"
    elif backend in ("flash2", "flash3") and {"flash2": _FLASH2, "flash3": _FLASH3}[backend] is None:
        package = "flash-attn" if backend == "flash2" else "flash-attn 3 (flash_attn_interface)"
        raise ValueError(f"attention backend {backend!r} needs {package}; install it or use 'sdpa'")
    if backend == "flash3":
        out = _FLASH3.flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    if backend == "flash2":
        return _FLASH2.flash_attn_func(q, k, v)
    if backend != "sdpa":
        raise ValueError(f"unknown attention backend {backend!r}: use auto, sdpa, flash2 or flash3")
    return F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    ).transpose(1, 2)
