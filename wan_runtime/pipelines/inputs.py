"""Checks of ``generate``'s arguments, all cheap, run before any model does work.

Each raises ``InputError`` with the fix in its message.
"""

from __future__ import annotations

import math
import numbers
import random
import sys
from pathlib import Path

from wan_runtime.checks import (
    MAX_TOKENS_A_SIDE,
    check_infer_frames,
    check_num_clip,
    check_seed,
    check_switch,
)
from wan_runtime.errors import InputError
from wan_runtime.tasks import HIGH_NOISE, TaskSpec


def size_multiple(spec: TaskSpec) -> int:
    """Pixels that width and height must be multiples of: VAE stride times DiT patch size."""
    return spec.vae_stride[1] * spec.patch_size[1]


def _nearest_multiples(value: int, step: int) -> list[int]:
    below = value // step * step
    return [v for v in (below, below + step) if v > 0]


def parse_size(size: str, spec: TaskSpec) -> tuple[int, int]:
    """``"W*H"`` (width first, as the official ``SIZE_CONFIGS`` keys) -> ``(W, H)``.

    Any width and height that ``size_multiple(spec)`` divides is accepted, up to 1024 times it;
    the error for another names the nearest valid sizes.
    """
    if not isinstance(size, str) or size.count("*") != 1:
        raise InputError(f"size must be a 'W*H' string such as {spec.default_size!r}, got {size!r}")
    try:
        width, height = (int(part) for part in size.split("*"))
    except ValueError:
        raise InputError(f"size must be a 'W*H' string such as {spec.default_size!r}, got {size!r}") from None
    step = size_multiple(spec)
    most = MAX_TOKENS_A_SIDE * step
    if max(width, height) > most:
        raise InputError(f"size {size} is too large for {spec.name}: at most {most} pixels a side, as the "
                         f"official model's position tables hold {MAX_TOKENS_A_SIDE} tokens a side (trained "
                         f"sizes: {', '.join(spec.supported_sizes)})")
    if width > 0 and height > 0 and width % step == 0 and height % step == 0:
        return width, height
    widths, heights = _nearest_multiples(max(width, 1), step), _nearest_multiples(max(height, 1), step)
    candidates = sorted(
        {(w, h) for w in widths for h in heights},
        key=lambda wh: (abs(wh[0] - width) + abs(wh[1] - height), wh),
    )
    nearest = ", ".join(f"{w}*{h}" for w, h in candidates[:4])
    raise InputError(
        f"size {size} does not fit {spec.name}: width and height must be positive multiples of {step} "
        f"(VAE stride {spec.vae_stride[1]} x patch {spec.patch_size[1]}); nearest valid sizes: {nearest} "
        f"(trained sizes: {', '.join(spec.supported_sizes)})"
    )


def _check_scale(value: object, name: str) -> float:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < math.inf):
        raise InputError(f"{name} must be a finite number >= 0 (e.g. 3.5 or 5.0), got {value!r}")
    return float(value)


def check_guide_scale(
    guide_scale: object, spec: TaskSpec, name: str = "guide_scale"
) -> float | tuple[float, float]:
    """One scale, or for the two-expert task a number or ``(low_noise, high_noise)`` pair, which is
    returned as a pair (``name``: the argument's, in the errors)."""
    if spec.boundary is None:
        if isinstance(guide_scale, (tuple, list)):
            raise InputError(f"{spec.name} has one model: {name} is one number, got {guide_scale!r}")
        return _check_scale(guide_scale, name)
    if isinstance(guide_scale, (tuple, list)):
        if len(guide_scale) != 2:
            raise InputError(
                f"{name} for {spec.name} is a number or a (low_noise, high_noise) pair, got {guide_scale!r}"
            )
        low, high = (_check_scale(v, name) for v in guide_scale)
        return low, high
    scale = _check_scale(guide_scale, name)
    return scale, scale


def expert_scale(guide: float | tuple[float, float], name: str) -> float:
    """The guide scale the DiT ``name`` samples with, of ``check_guide_scale``'s ``guide``: the
    one scale, or of i2v-A14B's ``(low_noise, high_noise)`` pair the expert's."""
    if isinstance(guide, tuple):
        low, high = guide
        return high if name == HIGH_NOISE else low
    return guide


def resolve_seed(seed: int) -> int:
    """The seed to use: ``seed`` itself, or for a negative one a random seed as the official code
    draws it."""
    check_seed(seed, "seed")
    return int(seed) if seed >= 0 else random.randint(0, sys.maxsize)


def check_prompt(prompt: object, name: str) -> str:
    """``prompt`` itself, after checking that it is a string."""
    if not isinstance(prompt, str):
        raise InputError(f"{name} must be a string, got {type(prompt).__name__}")
    return prompt


def check_clip_arguments(infer_frames: object, num_clip: object, start_from_ref: object,
                         pose_video: object) -> None:
    """s2v-14B's clip arguments: ``infer_frames`` as ``wan_runtime.checks.check_infer_frames``,
    ``num_clip`` None or positive, ``start_from_ref`` a bool, ``pose_video`` None or a path (the
    file itself is checked by ``wan_runtime.pose_video.probe_video``)."""
    check_infer_frames(infer_frames, "infer_frames")
    check_num_clip(num_clip, "num_clip")
    check_switch(start_from_ref, "start_from_ref")
    if pose_video is not None and not isinstance(pose_video, (str, Path)):
        raise InputError(f"pose_video must be the path of a video file, got {type(pose_video).__name__}")
