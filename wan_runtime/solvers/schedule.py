"""Sigma and timestep schedules of the official flow solvers.

A schedule of ``steps`` sigmas runs from the top of the noise range down, warped by the time shift
``shift*s / (1 + (shift-1)*s)``, and ends at sigma 0. The timesteps the DiT sees are those sigmas
(float64) times 1000, truncated to int64; the solvers then work on the sigmas rounded to float32.
The float64 sigmas are built with numpy's ``linspace`` and the shift written in the same operation
order as the official schedules, because truncating to integers makes a timestep depend on the last
bit of its sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The flow time shift: pushes sigmas toward 1 (more steps at high noise) for ``shift > 1``."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def unipc_sigmas(steps: int, shift: float) -> np.ndarray:
    """float64 sigmas of the official UniPC schedule, without the final 0."""
    # UniPC starts at the highest training sigma, 1 - 1/1000, which the official scheduler reads
    # back from its float32 table (0.99900001...).
    top = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
    return shift_sigmas(np.linspace(top, 0.0, steps + 1)[:-1], shift)


def dpmpp_sigmas(steps: int, shift: float) -> np.ndarray:
    """float64 sigmas of the official DPM-Solver++ schedule (starting at pure noise), without the final 0."""
    return shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:-1], shift)


@dataclass(frozen=True)
class FlowSchedule:
    """The tables a solver walks: ``timesteps[i]`` is fed to the DiT, ``sigmas[i] -> sigmas[i+1]`` is step i.

    ``sigmas`` and ``lambdas`` (the log signal-to-noise ratio ``log((1-s)/s)``) are float32 on the
    CPU with one entry more than ``timesteps``; the last sigma is 0, so the last lambda is +inf.
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor
    lambdas: torch.Tensor

    @classmethod
    def from_sigmas(cls, sigmas: np.ndarray, device: torch.device | str | None = None) -> FlowSchedule:
        """The schedule of float64 ``sigmas`` (without the final 0), timesteps on ``device``."""
        timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(device=device, dtype=torch.int64)
        table = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
        return cls(timesteps=timesteps, sigmas=table, lambdas=torch.log(1 - table) - torch.log(table))
