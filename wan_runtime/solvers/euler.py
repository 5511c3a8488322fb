"""The flow Euler sampler the Wan2.2-Lightning LoRAs were distilled with (``--sample_solver euler``).

A first-order step along the predicted flow: ``x_next = x + (sigma_next - sigma) * v``, computed in
float32 (at least: float64 for a float64 prediction) whatever the sample's and the prediction's
dtypes, on the float32 schedule of ``euler_schedule``. It is not one of the official Wan2.2
solvers; the Lightning release pairs it with 4 steps, shift 5 and guide scale 1.
"""

from __future__ import annotations

import torch

from wan_runtime.solvers.flow_solver import FlowSolver


class EulerSolver(FlowSolver):
    """The ``euler`` sampler; build it with ``make_solver("euler", ...)``."""

    def _advance(self, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        # A step of one dimension on the output's device, as the Lightning sampler's: a 0-d float32
        # step would leave a bfloat16 model output's product in bfloat16, where that sampler's is
        # float32.
        step = (self.sigmas[i + 1] - self.sigmas[i]).reshape(1).to(model_output.device)
        return sample.float() + step * model_output
