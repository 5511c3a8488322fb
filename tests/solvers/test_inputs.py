"""Bad arguments to make_solver and step() are InputErrors that name the problem and the valid values."""

import math

import pytest
import torch

from wan_runtime.errors import InputError
from wan_runtime.solvers import SOLVER_NAMES, make_solver


@pytest.mark.parametrize("name", ["heun", "UniPC", "dpm", ""])
def test_unknown_solver(name):
    with pytest.raises(InputError, match=r"unknown solver .*valid solvers are 'unipc', 'dpm\+\+', 'euler'"):
        make_solver(name, 40, 5.0)


@pytest.mark.parametrize("steps", [0, -3, 2.0, True, None, 1001, 10**8])
def test_bad_step_count(steps):
    """Past the 1000 training timesteps the official schedule repeats whole timesteps."""
    with pytest.raises(InputError, match="sampling_steps must be a whole number of steps from 1 to 1000 "):
        make_solver("unipc", steps, 5.0)


@pytest.mark.parametrize("shift", [0.0, -1.0, math.inf, math.nan, "5", None])
def test_bad_shift(shift):
    with pytest.raises(InputError, match="shift must be a positive finite number"):
        make_solver("dpm++", 40, shift)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_step_checks_timestep_shape_and_count(name):
    solver = make_solver(name, 2, 5.0)
    x = torch.zeros(1, 4, 2, 3)
    with pytest.raises(InputError, match=f"step 0 is at timestep {solver.timesteps[0].item()}, got t=5"):
        solver.step(x, 5, x)
    with pytest.raises(InputError, match=r"model_output has shape \(1, 4, 2\) but sample has \(1, 4, 2, 3\)"):
        solver.step(x[..., 0], solver.timesteps[0], x)
    for t in solver.timesteps:
        x = solver.step(torch.ones_like(x), t, x)
    with pytest.raises(InputError, match="all 2 steps of this solver are taken"):
        solver.step(x, solver.timesteps[-1], x)
