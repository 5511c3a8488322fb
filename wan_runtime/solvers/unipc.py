"""Flow UniPC (Zhao et al. 2023, arXiv:2302.04867) as the official Wan pipelines configure it.

That configuration: order 2, data prediction (``x0``), the ``B(h) = expm1(-h)`` variant ("bh2"), a
first-order step onto sigma 0, and the corrector at every step but the first. Step ``i`` first
corrects the sample the previous predictor produced (UniC), using the new data prediction, then
predicts the next sample from the corrected one (UniP). The data prediction itself is taken from the
uncorrected sample, as the DiT saw it.
"""

from __future__ import annotations

import torch

from wan_runtime.solvers.multistep import MultistepFlowSolver
from wan_runtime.solvers.schedule import FlowSchedule


def _unic2_weights(h: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """UniC-2's weights on the previous divided difference and on the new data prediction's change.

    They solve ``rho_prev + rho_new = b1`` and ``-r*rho_prev + rho_new = b2`` (the previous node
    sits at ``-r`` steps, the new one at 1), where ``b_k = k! * phi_{k+1}(-h) * (-h) / expm1(-h)``
    with the exponential-integrator functions ``phi_{k+1}(z) = (phi_k(z) - 1/k!) / z``.
    """
    z = -h
    b_h = torch.expm1(z)
    z_phi2 = b_h / z - 1
    z_phi3 = z_phi2 / z - 0.5
    b1, b2 = z_phi2 / b_h, 2 * z_phi3 / b_h
    rho_prev = (b1 - b2) / (1 + r)
    return rho_prev, b1 - rho_prev


class UniPCSolver(MultistepFlowSolver):
    """The official ``unipc`` sampler; build it with ``make_solver("unipc", ...)``."""

    def __init__(self, schedule: FlowSchedule) -> None:
        super().__init__(schedule)
        self._last_sample: torch.Tensor | None = None

    def _advance(self, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        x0 = self._data_prediction(i, model_output, sample)
        if i > 0:
            sample = self._corrected(i, x0)
        self._remember(x0)
        self._last_sample = sample
        return self._predicted(i, sample)

    def _first_order(
        self, s: int, x: torch.Tensor, x0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first-order move of ``x`` from sigma index ``s`` to ``s + 1``, its scale ``a``, and ``h``."""
        ratio, alpha_t, h = self._ratio_alpha_h(s, s + 1)
        a = alpha_t * torch.expm1(-h)
        return ratio * x - a * x0, a, h

    def _predicted(self, i: int, sample: torch.Tensor) -> torch.Tensor:
        x0 = self._x0[-1]
        moved, a, h = self._first_order(i, sample, x0)
        if self._order(i) == 2:
            slope = self._divided_difference(x0, self._x0[-2], self._previous_step_ratio(i, h))
            # UniP-2 weights the slope by a fixed 1/2 rather than by a solved weight, as the official does.
            moved = moved - a * (0.5 * slope)
        return moved.to(sample.dtype)

    def _corrected(self, i: int, x0: torch.Tensor) -> torch.Tensor:
        s, last = i - 1, self._last_sample
        x0_s = self._x0[-1]
        moved, a, h = self._first_order(s, last, x0_s)
        if self._order(s) == 1:
            # Likewise UniC-1's fixed weight 1/2 on the new data prediction's change.
            correction = 0.5 * (x0 - x0_s)
        else:
            r = self._previous_step_ratio(s, h)
            rho_prev, rho_new = _unic2_weights(h, r)
            slope = self._divided_difference(x0_s, self._x0[-2], r)
            correction = rho_prev * slope + rho_new * (x0 - x0_s)
        return (moved - a * correction).to(last.dtype)
