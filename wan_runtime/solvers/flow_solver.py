"""What every flow solver shares: the walk along a schedule, one ``step`` per timestep, checked."""

from __future__ import annotations

import torch

from wan_runtime.errors import InputError
from wan_runtime.solvers.schedule import FlowSchedule


class FlowSolver:
    """One sampling run: call ``step`` once per entry of ``timesteps``, in order.

    ``timesteps`` (on the device given to the solver) is what the DiT is conditioned on: int64 for
    the official solvers, float32 for ``euler``; ``sigmas`` (float32, CPU) holds one more entry, the
    final 0. ``step_index`` counts the steps taken. A solver serves one run only.
    """

    def __init__(self, schedule: FlowSchedule) -> None:
        self.timesteps = schedule.timesteps
        self.sigmas = schedule.sigmas
        self.step_index = 0
        # Host copy, so that checking ``t`` never reads the device table.
        self._timestep_values: list[float] = schedule.timesteps.tolist()

    def step(self, model_output: torch.Tensor, t: float | torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The sample at the next timestep, from the DiT's flow prediction ``model_output`` at ``sample``.

        ``t`` must be ``timesteps[step_index]`` (reading a device tensor's value syncs with the device).
        """
        self._check(model_output, t, sample)
        next_sample = self._advance(self.step_index, model_output, sample)
        self.step_index += 1
        return next_sample

    def _advance(self, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, model_output: torch.Tensor, t: float | torch.Tensor, sample: torch.Tensor) -> None:
        n = len(self._timestep_values)
        if self.step_index >= n:
            raise InputError(f"all {n} steps of this solver are taken; make a new solver for another run")
        if model_output.shape != sample.shape:
            raise InputError(
                f"model_output has shape {tuple(model_output.shape)} but sample has {tuple(sample.shape)}; "
                "they must match"
            )
        expected = self._timestep_values[self.step_index]
        given = t.item() if isinstance(t, torch.Tensor) else t
        if given != expected:
            raise InputError(
                f"step {self.step_index} is at timestep {expected}, got t={given}; "
                "pass the timesteps of solver.timesteps in order"
            )
