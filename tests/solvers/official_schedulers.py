"""The official schedulers, built and set up as the official i2v/ti2v pipelines do."""

from __future__ import annotations

import torch

from tests.official import official_module


def official_scheduler(name: str, sampling_steps: int, shift: float) -> tuple[object, torch.Tensor]:
    """The official ``name`` scheduler for a run, and the timesteps the pipeline loops over (CPU)."""
    if name == "unipc":
        scheduler = official_module("utils.fm_solvers_unipc").FlowUniPCMultistepScheduler(
            num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
        )
        scheduler.set_timesteps(sampling_steps, device="cpu", shift=shift)
        return scheduler, scheduler.timesteps
    solvers = official_module("utils.fm_solvers")
    scheduler = solvers.FlowDPMSolverMultistepScheduler(
        num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
    )
    timesteps, _ = solvers.retrieve_timesteps(
        scheduler, device="cpu", sigmas=solvers.get_sampling_sigmas(sampling_steps, shift)
    )
    return scheduler, timesteps
