"""Flow DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095) as the official Wan pipelines configure it.

That configuration: the deterministic multistep solver of order 2 on the data prediction with the
midpoint rule for the second-order term, and a first-order step onto sigma 0. As in the official
solver, the update is computed on a float32 copy of the sample whatever the sample's dtype, and the
result takes the dtype of the data prediction.
"""

from __future__ import annotations

import torch

from wan_runtime.solvers.multistep import MultistepFlowSolver


class DPMSolverPlusPlus(MultistepFlowSolver):
    """The official ``dpm++`` sampler; build it with ``make_solver("dpm++", ...)``."""

    def _advance(self, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        x0 = self._data_prediction(i, model_output, sample)
        self._remember(x0)
        ratio, alpha_t, h = self._ratio_alpha_h(i, i + 1)
        c = alpha_t * (torch.exp(-h) - 1)
        moved = ratio * sample.float() - c * x0
        if self._order(i) == 2:
            slope = self._divided_difference(x0, self._x0[-2], self._previous_step_ratio(i, h))
            moved = moved - (0.5 * c) * slope
        return moved.to(x0.dtype)
