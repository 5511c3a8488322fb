"""DiT matrix weights stored in 8-bit floats (``float8_e4m3fn``), one float32 scale per output row.

A 14B expert's linear layers hold about 99% of its weights: in bfloat16 that is 28 GB, more
than a 24 GB GPU, and two experts are 57 GB of CPU memory under ``offload_model``. Stored in
float8 they take half that. Each row of a weight is divided by ``max|row| / 448`` so that its
largest entry lands on the format's largest finite value, and rounded to the nearest float8
value: 3 mantissa bits, a relative rounding error of at most 2**-4 for the entries in the
normal range. Before each product the layer rebuilds the weight in the compute dtype, so the
products themselves run as without float8, with the rebuilt weight. This is lossy: the videos
differ from the official ones by what that rounding does (the official code has no float8).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] -> (float8 values [out, in], float32 scales [out, 1]) with
    ``values * scales`` the nearest float8 approximation of each row; a row whose largest entry
    over 448 is 0 in float32 (all zeros, or below about 6e-43) gets scale 1."""
    wide = weight.float()
    scale = wide.abs().amax(dim=1, keepdim=True) / FP8_MAX
    # A zero row, or one so small that its scale underflows, would divide 0 by 0.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    # peak / (peak / 448) can round to just above 448, which float8 has no value for.
    return (wide / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize_rows(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``values * scale`` computed in float32 and rounded once to ``dtype``."""
    return (values.float() * scale).to(dtype)


class Fp8Linear(nn.Module):
    """A linear layer with a float8 ``weight`` and its float32 row scales (``weight_scale``, a
    buffer: the official checkpoints have no such tensor, so checking a folder's tensors looks
    at the parameters alone); it computes in ``compute_dtype``. Converting the module to another
    floating dtype (``.to(torch.bfloat16)``, ``.float()``) converts the bias and the compute
    dtype and keeps the weight and the scales as they are."""

    def __init__(self, in_features: int, out_features: int, bias: bool, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.compute_dtype = compute_dtype
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=compute_dtype)) if bias else None

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Fp8Linear:
        weight, scale = self.weight.data, self.weight_scale
        super()._apply(fn, recurse)
        if self.weight.dtype != FP8:  # a dtype conversion: float8 is a floating dtype to torch
            self.compute_dtype = self.weight.dtype
            self.weight.data = weight.to(self.weight.device)
            self.weight_scale = scale.to(self.weight_scale.device)
        return self

    def set_weight(self, weight: torch.Tensor, device: torch.device | str) -> None:
        """Store ``weight`` [out, in] (any floating dtype) on ``device``, quantized where it lies
        (a GPU quantizes a CPU-bound expert faster than the CPU)."""
        values, scale = quantize_rows(weight)
        self.weight = nn.Parameter(values.to(device), requires_grad=False)
        self.weight_scale = scale.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = dequantize_rows(self.weight, self.weight_scale, self.compute_dtype)
        return F.linear(x.to(self.compute_dtype), weight, self.bias)


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a linear layer (``nn.Linear`` or ``Fp8Linear``) computes in."""
    return layer.compute_dtype if isinstance(layer, Fp8Linear) else layer.weight.dtype


def store_linears_in_fp8(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` inside ``module`` by an ``Fp8Linear`` on the same device,
    computing in the replaced layer's dtype, with its weight quantized and its bias (on the meta
    device, before loading, both are left to fill); returns how many."""
    linears = [(name, layer) for name, layer in module.named_modules() if isinstance(layer, nn.Linear)]
    for name, layer in linears:
        owner, _, leaf = name.rpartition(".")
        device = layer.weight.device
        with torch.device(device):
            replacement = Fp8Linear(layer.in_features, layer.out_features, layer.bias is not None,
                                    layer.weight.dtype)
        if device.type != "meta":
            replacement.set_weight(layer.weight.detach(), device)
            replacement.bias = layer.bias
        setattr(module.get_submodule(owner), leaf, replacement)
    return len(linears)
