"""The public ops: each a ``torch.library`` custom op that checks its inputs and runs the selected
backend, and a function that calls it.

Every op is a custom op in the ``wan_kernels`` namespace with a fake implementation, so
``torch.compile`` traces through it without a graph break; the backend is chosen when the op runs
(see ``wan_kernels.dispatch``). The checks run inside the op and its fake, so a caller of
``torch.ops.wan_kernels.*`` (or a traced graph) is refused what the functions refuse; the functions
check beforehand only what the op schema would refuse in its own words (non-tensors, bad scalars).
The arithmetic of each op is that of the function of the same name in ``wan_kernels.reference``.
"""

from __future__ import annotations

import torch

from wan_kernels import checks, reference
from wan_kernels.dispatch import resolve
from wan_kernels.gradients import register_reference_backward

_NAMESPACE = "wan_kernels"


def _custom_op(fn):
    name = fn.__name__.lstrip("_")
    op = torch.library.custom_op(f"{_NAMESPACE}::{name}", mutates_args=())(fn)
    register_reference_backward(op, getattr(reference, name))
    return op


def _float32_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=torch.float32, device=t.device)


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return torch.empty((), dtype=torch.float32, device=t.device)


def _check_norm_input(op: str, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                      out_dtype: torch.dtype, x_dtypes: tuple[torch.dtype, ...]) -> None:
    checks.tensor(op, "x", x, x_dtypes, ndim=3)
    checks.modulation(op, "shift", shift, x)
    checks.modulation(op, "scale", scale, x)
    checks.epsilon(op, eps)
    checks.out_dtype(op, out_dtype)


def _check_gated_input(op: str, x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> None:
    # The fused gated_residual_layernorm_modulate narrows x to float32 in _check_norm_input.
    checks.tensor(op, "x", x, checks.FLOATS, ndim=3)
    checks.tensor(op, "y", y, checks.FLOATS)
    checks.same_shape(op, "y", y, "x", x)
    checks.modulation(op, "gate", gate, x)


def _check_pair(op: str, names: tuple[str, str], a: torch.Tensor, b: torch.Tensor, min_dim: int = 1) -> None:
    checks.tensor(op, names[0], a, checks.FLOATS)
    checks.tensor(op, names[1], b, checks.FLOATS)
    checks.same_shape(op, names[1], b, names[0], a)
    checks.same_device(op, **{names[0]: a, names[1]: b})
    if a.dim() < min_dim:
        checks.fail(op, f"{names[0]} must have at least {min_dim} dimensions, got shape {tuple(a.shape)}")


def _check_layernorm_modulate(x, shift, scale, eps, out_dtype) -> None:
    op = "layernorm_modulate"
    _check_norm_input(op, x, shift, scale, eps, out_dtype, checks.FLOATS)
    checks.same_device(op, x=x, shift=shift, scale=scale)


def _check_gated_residual(x, y, gate) -> None:
    op = "gated_residual"
    _check_gated_input(op, x, y, gate)
    checks.same_device(op, x=x, y=y, gate=gate)


def _check_gated_residual_layernorm_modulate(x, y, gate, shift, scale, eps, out_dtype) -> None:
    op = "gated_residual_layernorm_modulate"
    _check_gated_input(op, x, y, gate)
    _check_norm_input(op, x, shift, scale, eps, out_dtype, checks.FLOAT32)
    checks.same_device(op, x=x, y=y, gate=gate, shift=shift, scale=scale)


def _check_rel(op: str, a: torch.Tensor, b: torch.Tensor, stride: int) -> int:
    """The checked stride, clamped to the token count (any stride past the last token samples the
    first alone), so that no backend forms an index from a stride near INT64_MAX."""
    _check_pair(op, ("a", "b"), a, b, min_dim=2)
    checks.positive_int(op, "stride", stride)
    return min(stride, max(a.shape[-2], 1))


def _check_qk_rmsnorm_rope(q, k, weight_q, weight_k, cos, sin, num_heads, eps) -> None:
    op = "qk_rmsnorm_rope"
    checks.tensor(op, "q", q, checks.FLOATS, ndim=3)
    checks.tensor(op, "k", k, (q.dtype,), ndim=3)
    checks.same_shape(op, "k", k, "q", q)
    checks.positive_int(op, "num_heads", num_heads)
    checks.epsilon(op, eps)
    width = q.shape[-1]
    if width % num_heads or (width // num_heads) % 2:
        checks.fail(op, f"C = {width} must split into {num_heads} heads of an even size")
    half = width // num_heads // 2
    for name, weight in (("weight_q", weight_q), ("weight_k", weight_k)):
        checks.tensor(op, name, weight, checks.FLOAT32, ndim=1)
        if weight.shape[0] != width:
            checks.fail(op, f"{name} must have the shape of [C] {(width,)}, got {tuple(weight.shape)}")
    for name, table in (("cos", cos), ("sin", sin)):
        checks.tensor(op, name, table, checks.FLOAT32)
        if tuple(table.shape) != (q.shape[1], 1, half) or not table.is_contiguous():
            checks.fail(op, f"{name} must be a contiguous [L, 1, D/2] = {(q.shape[1], 1, half)} table, "
                            f"got shape {tuple(table.shape)} and strides {table.stride()}")
    checks.same_device(op, q=q, k=k, weight_q=weight_q, weight_k=weight_k, cos=cos, sin=sin)


@_custom_op
def _layernorm_modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, round_to_input: bool,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    _check_layernorm_modulate(x, shift, scale, eps, out_dtype)
    return resolve("layernorm_modulate", x.device)(x, shift, scale, eps, round_to_input, out_dtype)


@_layernorm_modulate.register_fake
def _(x, shift, scale, eps, round_to_input, out_dtype):
    _check_layernorm_modulate(x, shift, scale, eps, out_dtype)
    return torch.empty(x.shape, dtype=out_dtype, device=x.device)


@_custom_op
def _gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    _check_gated_residual(x, y, gate)
    return resolve("gated_residual", x.device)(x, y, gate)


@_gated_residual.register_fake
def _(x, y, gate):
    _check_gated_residual(x, y, gate)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@_custom_op
def _gated_residual_layernorm_modulate(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
    eps: float, out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_gated_residual_layernorm_modulate(x, y, gate, shift, scale, eps, out_dtype)
    fn = resolve("gated_residual_layernorm_modulate", x.device)
    return fn(x, y, gate, shift, scale, eps, out_dtype)


@_gated_residual_layernorm_modulate.register_fake
def _(x, y, gate, shift, scale, eps, out_dtype):
    _check_gated_residual_layernorm_modulate(x, y, gate, shift, scale, eps, out_dtype)
    return _float32_like(x), torch.empty(x.shape, dtype=out_dtype, device=x.device)


@_custom_op
def _rel_l1(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    return resolve("rel_l1", a.device)(a, b, _check_rel("rel_l1", a, b, stride))


@_rel_l1.register_fake
def _(a, b, stride):
    _check_rel("rel_l1", a, b, stride)
    return _scalar(a)


@_custom_op
def _rel_l2(a: torch.Tensor, b: torch.Tensor, stride: int) -> torch.Tensor:
    return resolve("rel_l2", a.device)(a, b, _check_rel("rel_l2", a, b, stride))


@_rel_l2.register_fake
def _(a, b, stride):
    _check_rel("rel_l2", a, b, stride)
    return _scalar(a)


@_custom_op
def _residual_apply(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    _check_pair("residual_apply", ("x", "residual"), x, residual)
    return resolve("residual_apply", x.device)(x, residual)


@_residual_apply.register_fake
def _(x, residual):
    _check_pair("residual_apply", ("x", "residual"), x, residual)
    return _float32_like(x)


@_custom_op
def _residual_capture(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    _check_pair("residual_capture", ("out", "inp"), out, inp)
    return resolve("residual_capture", out.device)(out, inp)


@_residual_capture.register_fake
def _(out, inp):
    _check_pair("residual_capture", ("out", "inp"), out, inp)
    return _float32_like(out)


@_custom_op
def _qk_rmsnorm_rope(
    q: torch.Tensor, k: torch.Tensor, weight_q: torch.Tensor, weight_k: torch.Tensor, cos: torch.Tensor,
    sin: torch.Tensor, num_heads: int, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_qk_rmsnorm_rope(q, k, weight_q, weight_k, cos, sin, num_heads, eps)
    return resolve("qk_rmsnorm_rope", q.device)(q, k, weight_q, weight_k, cos, sin, num_heads, eps)


@_qk_rmsnorm_rope.register_fake
def _(q, k, weight_q, weight_k, cos, sin, num_heads, eps):
    _check_qk_rmsnorm_rope(q, k, weight_q, weight_k, cos, sin, num_heads, eps)
    heads = (*q.shape[:-1], num_heads, q.shape[-1] // num_heads)
    return q.new_empty(heads), k.new_empty(heads)


def layernorm_modulate(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    round_to_input: bool = True,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """adaLN input ``LayerNorm(x) * (1 + scale) + shift`` without affine weights.

    ``x`` [B, L, C] float32, bfloat16 or float16; ``shift``/``scale`` float32 [B, 1, C] (per sample)
    or [B, L, C] (per token). Statistics and modulation are in float32. By default the normalised
    value is rounded to ``x.dtype`` before the modulation, as the official Wan model does
    (``layer_norm(x).type_as(x)``), so results match it; ``round_to_input=False`` skips that
    rounding. The result is ``out_dtype`` (float32 by default; bfloat16 saves the cast a following
    bfloat16 matmul would do, with the same values).
    """
    op = "layernorm_modulate"
    checks.are_tensors(op, x=x, shift=shift, scale=scale)
    checks.epsilon(op, eps)
    checks.boolean(op, "round_to_input", round_to_input)
    checks.out_dtype(op, out_dtype)
    return torch.ops.wan_kernels.layernorm_modulate(x, shift, scale, float(eps), round_to_input, out_dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + y * gate`` computed in float32 and returned in ``x``'s dtype.

    ``x`` is the residual stream [B, L, C]: float32 as the official Wan model keeps it, or bfloat16 /
    float16 as diffusers keeps it (then the sum is rounded once, as ``.type_as(x)`` would). ``y`` has
    its shape in float32, bfloat16 or float16; ``gate`` is float32 [B, 1, C] or [B, L, C].
    """
    checks.are_tensors("gated_residual", x=x, y=y, gate=gate)
    return torch.ops.wan_kernels.gated_residual(x, y, gate)


def gated_residual_layernorm_modulate(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gated_residual`` and the next sub-layer's ``layernorm_modulate`` in one pass.

    ``x`` is the float32 residual stream [B, L, C]; ``y``, ``gate``, ``shift`` and ``scale`` as in
    those two ops. Returns ``(x + y * gate, layernorm_modulate(x + y * gate, shift, scale, eps))``:
    the new float32 residual and the modulated input in ``out_dtype``. The residual is float32, so
    the faithful rounding of the normalised value is exact.
    """
    op = "gated_residual_layernorm_modulate"
    checks.are_tensors(op, x=x, y=y, gate=gate, shift=shift, scale=scale)
    checks.epsilon(op, eps)
    checks.out_dtype(op, out_dtype)
    return torch.ops.wan_kernels.gated_residual_layernorm_modulate(x, y, gate, shift, scale, float(eps),
                                                                   out_dtype)


def _stride(op: str, stride: int) -> int:
    # The op schema holds an int64: a larger stride is capped (the op clamps it to the tokens).
    checks.positive_int(op, "stride", stride)
    return min(stride, 2**62)


def rel_l1(a: torch.Tensor, b: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``sum|a - b| / sum|b|`` over every ``stride``-th token (the second-to-last dimension).

    Accumulates in float32 (the C++ and CUDA kernels in double) and returns a 0-d float32 tensor
    on the inputs' device, without synchronising with the host. As the division does: ``inf`` where
    the sampled ``b`` is all zeros, ``nan`` where ``a`` is too, so a cache comparing it with a
    threshold (``nan < t`` is false) recomputes.
    """
    checks.are_tensors("rel_l1", a=a, b=b)
    return torch.ops.wan_kernels.rel_l1(a, b, _stride("rel_l1", stride))


def rel_l2(a: torch.Tensor, b: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``|a - b|_2 / |b|_2`` over every ``stride``-th token; otherwise as ``rel_l1``."""
    checks.are_tensors("rel_l2", a=a, b=b)
    return torch.ops.wan_kernels.rel_l2(a, b, _stride("rel_l2", stride))


def residual_apply(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``x + residual`` in float32 (a step cache reusing its residual); same shapes, any float dtypes."""
    checks.are_tensors("residual_apply", x=x, residual=residual)
    return torch.ops.wan_kernels.residual_apply(x, residual)


def residual_capture(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """``out - inp`` in float32 (the residual a step cache captures); same shapes, any float dtypes."""
    checks.are_tensors("residual_capture", out=out, inp=inp)
    return torch.ops.wan_kernels.residual_capture(out, inp)


def qk_rmsnorm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    weight_q: torch.Tensor,
    weight_k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_heads: int,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query/key RMSNorm over the full width C, then the interleaved-pair rotary embedding.

    ``q``, ``k`` [B, L, C] of one dtype; ``weight_q``, ``weight_k`` float32 [C]; ``cos``, ``sin``
    float32 [L, 1, D/2] with ``D = C / num_heads``. The normalised value is rounded to
    the input dtype before the weight, as ``reference.rms_norm`` does; the rotation is in float32.
    Returns [B, L, num_heads, D] in the input dtype.
    """
    op = "qk_rmsnorm_rope"
    checks.are_tensors(op, q=q, k=k, weight_q=weight_q, weight_k=weight_k, cos=cos, sin=sin)
    checks.positive_int(op, "num_heads", num_heads)
    checks.epsilon(op, eps)
    return torch.ops.wan_kernels.qk_rmsnorm_rope(q, k, weight_q, weight_k, cos, sin, num_heads, float(eps))
