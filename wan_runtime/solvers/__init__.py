"""The flow samplers of the official Wan2.2 pipelines, ``unipc`` and ``dpm++``.

``make_solver`` builds one for a run exactly as the official i2v/ti2v pipelines configure theirs
(1000 training timesteps, the time shift applied to the sampling sigmas, the deterministic
order-2 variants); its ``timesteps`` and every ``step`` reproduce the official scheduler's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch

from wan_runtime.errors import InputError
from wan_runtime.solvers.dpmpp import DPMSolverPlusPlus
from wan_runtime.solvers.multistep import MultistepFlowSolver
from wan_runtime.solvers.schedule import FlowSchedule, dpmpp_sigmas, unipc_sigmas
from wan_runtime.solvers.unipc import UniPCSolver

_SOLVERS: dict[str, tuple[type[MultistepFlowSolver], Callable[[int, float], np.ndarray]]] = {
    "unipc": (UniPCSolver, unipc_sigmas),
    "dpm++": (DPMSolverPlusPlus, dpmpp_sigmas),
}
SOLVER_NAMES = tuple(_SOLVERS)


def _is_number(value: object, kind: type) -> bool:
    # bool is an Integral and a Real, but True as a step count or a shift is a caller's mistake.
    return isinstance(value, kind) and not isinstance(value, bool)


def _check_arguments(name: str, sampling_steps: int, shift: float) -> None:
    if name not in _SOLVERS:
        raise InputError(f"unknown solver {name!r}; valid solvers are {', '.join(map(repr, SOLVER_NAMES))}")
    if not (_is_number(sampling_steps, numbers.Integral) and sampling_steps >= 1):
        raise InputError(f"sampling_steps must be a positive integer (1, 2, ...), got {sampling_steps!r}")
    if not (_is_number(shift, numbers.Real) and 0 < shift < math.inf):
        raise InputError(f"shift must be a positive finite number (e.g. 3.0 or 5.0), got {shift!r}")


def make_solver(
    name: str, sampling_steps: int, shift: float, device: torch.device | str | None = None
) -> MultistepFlowSolver:
    """A fresh solver for one sampling run of ``sampling_steps`` steps.

    ``name`` is ``"unipc"`` or ``"dpm++"``; ``shift`` (> 0) warps the schedule toward high noise, as
    the pipelines' ``shift`` argument does; ``device`` is where ``timesteps`` live. Raises
    ``InputError`` for an unknown name, a non-positive or non-integer step count, or a shift that is
    not a positive finite number.
    """
    _check_arguments(name, sampling_steps, shift)
    solver_class, sigmas = _SOLVERS[name]
    return solver_class(FlowSchedule.from_sigmas(sigmas(int(sampling_steps), float(shift)), device))


__all__ = ["SOLVER_NAMES", "DPMSolverPlusPlus", "MultistepFlowSolver", "UniPCSolver", "make_solver"]
