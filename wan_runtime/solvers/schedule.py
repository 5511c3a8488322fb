"""Sigma and timestep schedules of the flow solvers.

A schedule of ``steps`` sigmas runs from the top of the noise range down, warped by the time shift
``shift*s / (1 + (shift-1)*s)``, and ends at sigma 0. For the official solvers the timesteps the
DiT sees are those sigmas (float64) times 1000, truncated to int64; the solvers then work on the
sigmas rounded to float32. The float64 sigmas are built with numpy's ``linspace`` and the shift
written in the same operation order as the official schedules, because truncating to integers makes
a timestep depend on the last bit of its sigma. The ``euler`` schedule of the Wan2.2-Lightning
distillation is float32 throughout and keeps its timesteps fractional (``euler_schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray | torch.Tensor, shift: float) -> np.ndarray | torch.Tensor:
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


def euler_schedule(steps: int, shift: float, device: torch.device | str | None = None) -> FlowSchedule:
    """The schedule the Wan2.2-Lightning LoRAs were distilled with: ``steps + 1`` sigmas evenly
    spaced from 1 to 0 and shifted, computed in float32 as that sampler computes them, and float32
    timesteps ``1000 * sigma`` (not truncated: 4 steps at shift 5 are 1000, 937.5, 833.33, 625)."""
    fractions = torch.from_numpy(np.linspace(NUM_TRAIN_TIMESTEPS, 0, steps + 1, dtype=np.float32))
    sigmas = shift_sigmas(fractions / NUM_TRAIN_TIMESTEPS, shift)
    return FlowSchedule(timesteps=(sigmas[:-1] * NUM_TRAIN_TIMESTEPS).to(device), sigmas=sigmas,
                        lambdas=torch.log(1 - sigmas) - torch.log(sigmas))


@dataclass(frozen=True)
class FlowSchedule:
    """The tables a solver walks: ``timesteps[i]`` is fed to the DiT, ``sigmas[i] -> sigmas[i+1]`` is step i.

    ``timesteps`` are int64 for the official solvers, float32 for ``euler``.

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
