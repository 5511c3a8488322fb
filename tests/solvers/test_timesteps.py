"""Our schedules against the official ones: timesteps and sigmas must be equal, not close."""

import pytest
import torch

from tests.solvers.official_schedulers import official_scheduler
from wan_runtime.solvers import OFFICIAL_SOLVER_NAMES, make_solver


@pytest.mark.parametrize("name", OFFICIAL_SOLVER_NAMES)
@pytest.mark.parametrize("steps", [4, 40, 50])
@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_timesteps_equal_official(name, steps, shift):
    official, timesteps = official_scheduler(name, steps, shift)
    solver = make_solver(name, steps, shift, device="cpu")
    assert solver.timesteps.dtype == timesteps.dtype == torch.int64
    assert solver.timesteps.device == timesteps.device
    assert torch.equal(solver.timesteps, timesteps)
    assert torch.equal(solver.sigmas, official.sigmas)


def timesteps_of(name: str, steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Our timesteps and the official ones."""
    return make_solver(name, steps, shift).timesteps, official_scheduler(name, steps, shift)[1]


@pytest.mark.parametrize("name", OFFICIAL_SOLVER_NAMES)
def test_timesteps_equal_official_over_many_schedules(name):
    # Truncating sigma*1000 to an integer flips on the last bit of a sigma that lands on an integer
    # timestep, so sweep step counts and shifts (the official configs use 3, 5 and 12) for such ties.
    mismatches = [
        (steps, shift)
        for steps in range(1, 61)
        for shift in (1.0, 2.5, 3.0, 5.0, 7.0, 12.0)
        if not torch.equal(*timesteps_of(name, steps, shift))
    ]
    assert mismatches == []


def test_timesteps_start_where_the_official_ones_do():
    assert make_solver("unipc", 40, 5.0).timesteps[0].item() == 999
    assert make_solver("dpm++", 40, 5.0).timesteps[0].item() == 1000
