"""The flow samplers of the official Wan2.2 pipelines, ``unipc`` and ``dpm++``, and ``euler``.

``make_solver`` builds one for a run exactly as the official i2v/ti2v pipelines configure theirs
(1000 training timesteps, the time shift applied to the sampling sigmas, the deterministic
order-2 variants); its ``timesteps`` and every ``step`` reproduce the official scheduler's.
``euler`` is the sampler of the Wan2.2-Lightning distillation (not an official solver), as that
release runs it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch

from wan_runtime.errors import InputError
from wan_runtime.solvers.dpmpp import DPMSolverPlusPlus
from wan_runtime.solvers.euler import EulerSolver
from wan_runtime.solvers.flow_solver import FlowSolver
from wan_runtime.solvers.multistep import MultistepFlowSolver
from wan_runtime.solvers.schedule import (
    NUM_TRAIN_TIMESTEPS,
    FlowSchedule,
    dpmpp_sigmas,
    euler_schedule,
    unipc_sigmas,
)
from wan_runtime.solvers.unipc import UniPCSolver

Device = torch.device | str | None


def _official(sigmas: Callable[[int, float], np.ndarray]) -> Callable[[int, float, Device], FlowSchedule]:
    return lambda steps, shift, device: FlowSchedule.from_sigmas(sigmas(steps, shift), device)


_SOLVERS: dict[str, tuple[type[FlowSolver], Callable[[int, float, Device], FlowSchedule]]] = {
    "unipc": (UniPCSolver, _official(unipc_sigmas)),
    "dpm++": (DPMSolverPlusPlus, _official(dpmpp_sigmas)),
    "euler": (EulerSolver, euler_schedule),
}
SOLVER_NAMES = tuple(_SOLVERS)
# The solvers of the official Wan2.2 code (euler comes from the Wan2.2-Lightning release).
OFFICIAL_SOLVER_NAMES = ("unipc", "dpm++")


def _is_number(value: object, kind: type) -> bool:
    # bool is an Integral and a Real, but True as a step count or a shift is a caller's mistake.
    return isinstance(value, kind) and not isinstance(value, bool)


def _check_arguments(name: str, sampling_steps: int, shift: float) -> None:
    if name not in _SOLVERS:
        raise InputError(f"unknown solver {name!r}; valid solvers are {', '.join(map(repr, SOLVER_NAMES))}")
    if not (_is_number(sampling_steps, numbers.Integral) and 1 <= sampling_steps <= NUM_TRAIN_TIMESTEPS):
        raise InputError(f"sampling_steps must be a whole number of steps from 1 to {NUM_TRAIN_TIMESTEPS} "
                         f"(the timesteps the models were trained on), got {sampling_steps!r}")
    if not (_is_number(shift, numbers.Real) and 0 < shift < math.inf):
        raise InputError(f"shift must be a positive finite number (e.g. 3.0 or 5.0), got {shift!r}")


def make_solver(name: str, sampling_steps: int, shift: float, device: Device = None) -> FlowSolver:
    """A fresh solver for one sampling run of ``sampling_steps`` steps.

    ``name`` is ``"unipc"``, ``"dpm++"`` or ``"euler"``; ``shift`` (> 0) warps the schedule toward
    high noise, as the pipelines' ``shift`` argument does; ``device`` is where ``timesteps`` live.
    Raises ``InputError`` for an unknown name, a non-positive or non-integer step count, or a shift
    that is not a positive finite number.
    """
    _check_arguments(name, sampling_steps, shift)
    solver_class, schedule = _SOLVERS[name]
    return solver_class(schedule(int(sampling_steps), float(shift), device))


__all__ = ["OFFICIAL_SOLVER_NAMES", "SOLVER_NAMES", "DPMSolverPlusPlus", "EulerSolver", "FlowSolver",
           "MultistepFlowSolver", "UniPCSolver", "make_solver"]
