"""TeaCache rescale policies: which signal TeaCache compares, and how its change is rescaled.

``linear`` compares the first block's modulated, normalised input ("modulated hidden dynamics")
and uses the raw relative L1 change. ``poly`` compares a timestep signal and rescales its change
with a polynomial fitted for one model; the signal depends on the timesteps only, so the skip
schedule is known before sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wan_runtime.errors import InputError

Signal = Literal["modulated_input", "time_embedding"]


@dataclass(frozen=True)
class Policy:
    """A TeaCache policy: ``signal`` names the tensor compared between steps; ``coefficients``
    (highest degree first) rescale the relative L1 change, or None for the raw change."""

    name: str
    signal: Signal
    coefficients: tuple[float, ...] | None = None

    @property
    def planned(self) -> bool:
        """Whether the signal depends on the timesteps only, so decisions can be planned."""
        return self.signal != "modulated_input"

    def rescale(self, change: float) -> float:
        """The accumulator increment for a relative L1 ``change``, never negative.

        A fitted polynomial can dip below zero for small changes (its constant term is negative);
        clamping keeps the accumulator non-negative, so that a threshold of 0 never skips.
        """
        if self.coefficients is None:
            return change
        value = 0.0
        for c in self.coefficients:  # Horner's rule, highest degree first
            value = value * change + c
        return max(value, 0.0)


LINEAR = Policy("linear", "modulated_input")

# Polynomials fitted for TeaCache, by the model name the pipeline gives the cache manager.
# Wan2.2 ti2v-5B: ModelTC/LightX2V configs/caching/teacache/wan_ti2v_tea_720p.json (commit
# f8aee98b), fitted in TeaCache's non-``use_ret_steps`` mode, i.e. on the time embedding ``e``,
# not the projection ``e0``; the signal follows the fit. No set has been fitted for the Wan2.2
# i2v-A14B experts: the Wan2.1 I2V-14B polynomials are reported to fail on them (SGLang PR
# #36767), so ``poly`` refuses those models rather than guess.
FITTED = {
    "ti2v": Policy(
        "poly",
        "time_embedding",
        (1.57472669e05, -1.15702395e05, 3.10761669e04, -3.83116651e03, 2.21608777e02, -4.81179567e00),
    ),
}


def available(name: str, model: str) -> bool:
    """Whether the policy ``name`` can serve the model named ``model`` (``poly`` needs a fitted
    polynomial)."""
    return name == "linear" or model in FITTED


def policy_for(name: str, model: str) -> Policy:
    """The policy ``name`` (validated by ``CacheConfig``) for the model named ``model``."""
    if name == "linear":
        return LINEAR
    if not available(name, model):
        raise InputError(
            f"teacache_policy 'poly' has no fitted coefficients for model {model!r}; models with a "
            f"fitted set: {', '.join(sorted(FITTED))} (use teacache_policy 'linear' for the others)"
        )
    return FITTED[model]
