"""The official Wan2.2 modules (PyPI package ``wan22``), importable on a CPU.

``wan/__init__.py`` imports every pipeline (and through them torchvision, cv2, flash-attn), so the
packages ``wan``, ``wan.modules``, ``wan.utils``, ``wan.modules.s2v`` and ``wan.distributed`` are
registered here as bare namespaces and only the modules a test asks for are executed
(``wan.configs`` imports only configuration modules). Two shims make them run without a GPU:

- ``torch.cuda.current_device`` is called by ``wan.modules.t5`` at import time; it answers 0.
- ``flash_attention`` needs flash-attn and CUDA; where flash-attn is missing it is replaced by
  scaled-dot-product attention that honours ``q_lens``/``k_lens`` as the varlen flash kernel does
  (keys past ``k_lens`` are ignored, query rows past ``q_lens`` are zero). On CUDA it casts
  float32 inputs to ``dtype`` (bfloat16) as the official function does; on the CPU it keeps the
  inputs' precision, so float32 parity tests compare float32 arithmetic.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F


def _wan_root() -> Path:
    spec = importlib.util.find_spec("wan")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the reference package is missing: pip install --no-deps wan22==2.2.11")
    return Path(next(iter(spec.submodule_search_locations)))


def _register_namespaces() -> None:
    if isinstance(sys.modules.get("wan"), types.ModuleType) and getattr(
        sys.modules["wan"], "_wan_runtime_shim", False
    ):
        return
    root = _wan_root()
    # wan.modules.s2v imports its audio encoder (librosa) and wan.distributed its FSDP helpers.
    packages = ("modules", "utils", "modules.s2v", "distributed")
    for name, path in (("wan", root), *((f"wan.{p}", root.joinpath(*p.split("."))) for p in packages)):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        module._wan_runtime_shim = True
        sys.modules[name] = module


def sdpa_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_lens: torch.Tensor | None = None,
    k_lens: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    q_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    deterministic: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    version: int | None = None,
) -> torch.Tensor:
    """``wan.modules.attention.flash_attention`` on [B, L, N, D] tensors, without CUDA."""
    assert not causal and window_size == (-1, -1) and dropout_p == 0.0
    lq, lk, out_dtype = q.size(1), k.size(1), q.dtype
    if q_scale is not None:
        q = q * q_scale
    if q.is_cuda:
        q, k, v = (u if u.dtype in (torch.float16, torch.bfloat16) else u.to(dtype) for u in (q, k, v))
    keep = None
    if k_lens is not None and bool((k_lens < lk).any()):
        keep = (torch.arange(lk, device=q.device)[None, :] < k_lens.to(q.device)[:, None])[
            :, None, None, :
        ]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep, scale=softmax_scale
    ).transpose(1, 2)
    if q_lens is not None:
        rows = torch.arange(lq, device=q.device)[None, :] < q_lens.to(q.device)[:, None]
        out = out * rows[:, :, None, None]
    return out.type(out_dtype)


def official_module(name: str) -> types.ModuleType:
    """Import ``wan.<name>`` (e.g. ``"modules.model"``, ``"utils.fm_solvers_unipc"``) with the CPU
    shims applied."""
    _register_namespaces()
    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: 0
    module = importlib.import_module(f"wan.{name}")
    attention = importlib.import_module("wan.modules.attention")
    flash_missing = not (attention.FLASH_ATTN_2_AVAILABLE or attention.FLASH_ATTN_3_AVAILABLE)
    if hasattr(module, "flash_attention") and (flash_missing or not torch.cuda.is_available()):
        module.flash_attention = sdpa_flash_attention
    return module


def import_with_stand_ins(name: str, stand_ins: dict[str, types.ModuleType]) -> types.ModuleType:
    """Import ``wan.<name>`` while ``stand_ins`` fill in for missing packages (torchvision,
    decord, ...), removing them again afterwards so no other code finds them. Modules already
    present keep precedence over their stand-ins."""
    if f"wan.{name}" in sys.modules:
        return sys.modules[f"wan.{name}"]
    added = [key for key in stand_ins if key not in sys.modules]
    sys.modules.update({key: stand_ins[key] for key in added})
    try:
        return importlib.import_module(f"wan.{name}")
    finally:
        for key in added:
            sys.modules.pop(key, None)
