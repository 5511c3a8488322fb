"""Tolerances of the kernel tests, stated once per dtype.

A result is keyed by the coarsest dtype it was rounded through (the input's dtype where the op
rounds to it, and the output dtype). Kernel and reference may round a value near a rounding
boundary in opposite directions (different summation order, FMA contraction, ``rsqrt``), so:
``rtol`` is one unit in the last place of that dtype; ``atol`` is one unit in the last place of a
normalised value of magnitude up to 8 (a rounding of the normalised value before the modulation,
seen in an output near zero); ``rel_l2`` bounds the error over the whole tensor, far below what a
systematic mistake gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    rel_l2: float


TOLERANCES = {
    torch.float32: Tolerance(rtol=2**-20, atol=2**-18, rel_l2=1e-6),
    torch.float16: Tolerance(rtol=2**-10, atol=2**-7, rel_l2=2e-4),
    torch.bfloat16: Tolerance(rtol=2**-7, atol=2**-4, rel_l2=2e-3),
}
# rel_l1 / rel_l2 results: float32 sums of up to ~10^5 terms in a different order.
REDUCTION_RTOL = 1e-5


def coarsest(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype of lowest precision among ``dtypes``."""
    return max(dtypes, key=lambda d: torch.finfo(d).eps)


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, rounded_through: torch.dtype) -> None:
    """``actual`` equals ``expected`` within the tolerance of ``rounded_through``, elementwise and overall."""
    tol = TOLERANCES[rounded_through]
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=tol.rtol, atol=tol.atol)
    a, e = actual.double(), expected.double()
    rel = float((a - e).norm() / e.norm().clamp_min(1e-30))
    assert rel <= tol.rel_l2, f"relative L2 error {rel:.3g} > {tol.rel_l2:.3g}"
