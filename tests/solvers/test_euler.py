"""``euler``, the sampler of the Wan2.2-Lightning distillation, against diffusers' flow-matching
Euler scheduler on the same schedule (``tests/solvers/lightning_euler.py``)."""

import numpy as np
import pytest
import torch

from tests.solvers.lightning_euler import lightning_euler
from tests.solvers.test_trajectories import SHAPE, SOLVER_VS_OFFICIAL, velocity_model
from tests.tolerances import rel_l2
from wan_runtime.solvers import make_solver
from wan_runtime.tasks import TASKS

# One float32 rounding of the schedule's arithmetic apart: diffusers spaces the sigmas in float64
# before rounding, the Lightning sampler (and ours) spaces the timesteps in float32.
TIMESTEP_ULPS = 1


def lightning_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Lightning sampler's float32 arithmetic, spelled out: timesteps 1000 -> 0 in float32,
    to sigmas, shifted, back to timesteps; (timesteps fed to the DiT, sigmas)."""
    timesteps = torch.from_numpy(np.linspace(1000, 0, steps + 1, dtype=np.float32))
    sigmas = timesteps / 1000
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return (sigmas * 1000)[:-1], sigmas


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 40, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 12.0])
def test_schedule_is_the_lightning_samplers_bit_for_bit(steps, shift):
    solver = make_solver("euler", steps, shift)
    timesteps, sigmas = lightning_schedule(steps, shift)
    assert torch.equal(solver.timesteps, timesteps) and torch.equal(solver.sigmas, sigmas)


def test_lightning_settings_give_fractional_timesteps():
    """4 steps at shift 5, as the Lightning LoRAs run: the DiT sees 1000, 937.5, 833.33 and 625
    (not truncated to integers, as the official solvers' are), and i2v-A14B's boundary at 900
    gives two steps to each expert."""
    solver = make_solver("euler", 4, 5.0)
    assert solver.timesteps.dtype == torch.float32
    assert solver.timesteps.tolist() == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-4)
    assert solver.sigmas.tolist() == pytest.approx([1.0, 0.9375, 0.833333, 0.625, 0.0], abs=1e-6)
    boundary = TASKS["i2v-A14B"].boundary * 1000
    assert [t >= boundary for t in solver.timesteps.tolist()] == [True, True, False, False]


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 40])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 12.0])
def test_schedule_equals_diffusers(steps, shift):
    ours, reference = make_solver("euler", steps, shift), lightning_euler(steps, shift)
    assert ours.timesteps.dtype == reference.timesteps.dtype == torch.float32
    ulp = torch.finfo(torch.float32).eps * 1000
    assert (ours.timesteps - reference.timesteps).abs().max() <= TIMESTEP_ULPS * ulp
    assert (ours.sigmas - reference.sigmas).abs().max() <= TIMESTEP_ULPS * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps", [1, 4, 40])
@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_every_step_matches_diffusers(steps, shift, dtype):
    ours, reference = make_solver("euler", steps, shift), lightning_euler(steps, shift)
    predict = velocity_model(dtype)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    expected = actual = noise
    for i, t in enumerate(reference.timesteps):
        expected = reference.step(predict(expected, t), t, expected, return_dict=False)[0]
        actual = ours.step(predict(actual, t), ours.timesteps[i], actual)
        # As the Lightning sampler: the sample in float32 (at least), whatever its dtype.
        assert actual.dtype == torch.promote_types(torch.float32, dtype)
        assert rel_l2(actual, expected) <= SOLVER_VS_OFFICIAL, f"step {i}"
    assert ours.step_index == steps


def test_a_step_on_fixed_tensors():
    """x + (sigma_next - sigma) * v, spelled out: with v = x - x0 one step from sigma 1 to 0 lands on x0."""
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(2, *SHAPE, generator=g)
    solver = make_solver("euler", 1, 5.0)
    assert torch.allclose(solver.step(noise - x0, solver.timesteps[0], noise), x0, atol=1e-6)


def test_bfloat16_model_output_is_stepped_in_float32():
    """As the Lightning sampler, whose step is a float32 tensor of the sample's rank: the product
    with a bfloat16 prediction is float32, not rounded to bfloat16."""
    solver = make_solver("euler", 4, 5.0)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(SHAPE, generator=g)
    for i, t in enumerate(solver.timesteps):
        v = torch.randn(SHAPE, generator=g).bfloat16()
        step = (solver.sigmas[i + 1] - solver.sigmas[i]).reshape([1] * len(SHAPE))
        expected = x.bfloat16().float() + step * v
        x = solver.step(v, t, x.bfloat16())
        assert x.dtype == torch.float32 and torch.equal(x, expected)


def test_steps_on_the_device_of_the_prediction():
    """The schedule stays on the CPU; a step on another device's tensors (the meta device here,
    a GPU in a run) moves its scalar there, whatever the prediction's dtype."""
    solver = make_solver("euler", 2, 5.0)
    x = torch.empty(SHAPE, device="meta")
    for t in solver.timesteps:
        x = solver.step(torch.empty(SHAPE, device="meta", dtype=torch.bfloat16), t, x)
        assert (x.device.type, x.dtype) == ("meta", torch.float32)
