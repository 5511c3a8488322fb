"""Input checks shared by the ops: each failure is a ``ValueError`` naming the op and what it expects.

The checks read only shapes, dtypes, strides and devices, so they also run on the fake tensors
``torch.compile`` traces with.
"""

from __future__ import annotations

import torch

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
FLOAT32 = (torch.float32,)


def fail(op: str, message: str) -> None:
    """Raise the ``ValueError`` of a rejected input."""
    raise ValueError(f"wan_kernels.{op}: {message}")


def _dtype_names(dtypes: tuple[torch.dtype, ...]) -> str:
    return " or ".join(str(d).removeprefix("torch.") for d in dtypes)


def tensor(op: str, name: str, t: object, dtypes: tuple[torch.dtype, ...], ndim: int | None = None) -> None:
    """``t`` is a tensor of one of ``dtypes``, ``ndim``-D when given, contiguous in its last dim."""
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        fail(op, f"{name} must be a dense tensor, got layout {t.layout} (convert it with .to_dense())")
    if t.dtype not in dtypes:
        fail(op, f"{name} must be {_dtype_names(dtypes)}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        fail(op, f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.dim() == 0:
        fail(op, f"{name} must have at least one dimension")
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        fail(op, f"{name} must be contiguous in its last dimension, got stride {t.stride(-1)}")


def are_tensors(op: str, **values: object) -> None:
    """Every value is a tensor: checked before an op's schema would refuse it in its own words."""
    for name, value in values.items():
        if not isinstance(value, torch.Tensor):
            fail(op, f"{name} must be a tensor, got {type(value).__name__}")


def same_device(op: str, **tensors: torch.Tensor) -> None:
    """All ``tensors`` are on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        fail(op, f"tensors must be on one device, got {', '.join(f'{n}: {d}' for n, d in devices.items())}")


def same_shape(op: str, name: str, t: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    """``t`` has the shape of ``like``."""
    if t.shape != like.shape:
        fail(op, f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(t.shape)}")


def modulation(op: str, name: str, t: object, x: torch.Tensor) -> None:
    """``t`` is a float32 per-sample [B, 1, C] or per-token [B, L, C] modulation row of ``x`` [B, L, C]."""
    tensor(op, name, t, FLOAT32, ndim=3)
    b, length, c = x.shape
    if tuple(t.shape) not in ((b, 1, c), (b, length, c)):
        fail(op, f"{name} must be [B, 1, C] or [B, L, C] = {(b, 1, c)} or {(b, length, c)}, "
                 f"got {tuple(t.shape)}")


def out_dtype(op: str, dtype: object) -> None:
    """``dtype`` is a floating output dtype."""
    if dtype not in FLOATS:
        fail(op, f"out_dtype must be {_dtype_names(FLOATS)}, got {dtype!r}")


def boolean(op: str, name: str, value: object) -> None:
    """``value`` is a bool (a string such as ``"False"`` would otherwise count as true)."""
    if not isinstance(value, bool):
        fail(op, f"{name} must be True or False, got {value!r}")


def positive_int(op: str, name: str, value: object) -> None:
    """``value`` is an int of at least 1 (a ``SymInt`` where ``torch.compile`` traces sizes symbolically)."""
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)) or value < 1:
        fail(op, f"{name} must be a positive int, got {value!r}")


def epsilon(op: str, value: object) -> None:
    """``value`` is a non-negative number (not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        fail(op, f"eps must be a non-negative float, got {value!r}")
