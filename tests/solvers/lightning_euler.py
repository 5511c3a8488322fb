"""The sampler of the Wan2.2-Lightning release, built from diffusers' flow-matching Euler scheduler
(an implementation independent of ours): its sigmas evenly spaced from 1 to 0 over the steps,
then shifted, and a step ``x + (sigma_next - sigma) * v``.

``LightningEuler`` takes the constructor and ``set_timesteps`` arguments of the official UniPC
scheduler, so that an official pipeline built with it in place of that scheduler samples as the
Lightning release's pipelines do (their loop is the official one with this scheduler).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler


def lightning_euler(
    steps: int, shift: float, device: torch.device | str = "cpu"
) -> FlowMatchEulerDiscreteScheduler:
    """diffusers' Euler scheduler on the Lightning schedule of ``steps`` steps at ``shift``."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1].tolist(), device=device)
    return scheduler


class LightningEuler:
    """Stands in for the official ``FlowUniPCMultistepScheduler`` in an official pipeline."""

    def __init__(self, num_train_timesteps: int, shift: float, use_dynamic_shifting: bool) -> None:
        self.scheduler: FlowMatchEulerDiscreteScheduler | None = None

    def set_timesteps(self, steps: int, device: torch.device | str, shift: float) -> None:
        self.scheduler = lightning_euler(steps, shift, device)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    def step(self, model_output, timestep, sample, return_dict=False, generator=None):
        return self.scheduler.step(model_output, timestep, sample, return_dict=return_dict)
