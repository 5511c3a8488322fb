"""Our solvers step for step against the official schedulers, on a fixed stand-in for the DiT."""

import pytest
import torch

from tests.solvers.official_schedulers import official_scheduler
from tests.tolerances import rel_l2
from wan_runtime.solvers import OFFICIAL_SOLVER_NAMES, make_solver

# Same float32 coefficient arithmetic as the official schedulers, so samples may differ only by the
# rounding of a few reordered operations (measured on runs of 1 to 50 steps, shifts 3, 5 and 12:
# at most 1.4e-7 in float32, 1.3e-8 in float64).
SOLVER_VS_OFFICIAL = 1e-6

SHAPE = (1, 4, 2, 3, 5)  # (batch, channels, frames, height, width), as the pipelines call step()


def velocity_model(dtype: torch.dtype):
    """A deterministic flow prediction of (sample, t): a seeded random linear map plus a t-dependent bias."""
    g = torch.Generator().manual_seed(7)
    n = torch.Size(SHAPE).numel()
    weight = (torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5).to(dtype)
    bias = torch.randn(SHAPE, generator=g, dtype=torch.float64).to(dtype)

    def predict(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (sample.reshape(-1) @ weight).reshape(SHAPE) + (float(t) / 1000) * bias

    return predict


def run_both(name: str, steps: int, shift: float, dtype: torch.dtype):
    """Every intermediate sample of the official scheduler and of ours, from the same noise."""
    official, timesteps = official_scheduler(name, steps, shift)
    ours = make_solver(name, steps, shift, device="cpu")
    predict = velocity_model(dtype)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    seed_g = torch.Generator().manual_seed(42)
    expected, actual = [noise], [noise]
    for t in timesteps:
        expected.append(
            official.step(predict(expected[-1], t), t, expected[-1], return_dict=False, generator=seed_g)[0]
        )
        actual.append(ours.step(predict(actual[-1], t), t, actual[-1]))
    return expected[1:], actual[1:]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", OFFICIAL_SOLVER_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 4, 40])
@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_every_step_matches_official(name, steps, shift, dtype):
    expected, actual = run_both(name, steps, shift, dtype)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, f"step {i}"
        assert rel_l2(a, e) <= SOLVER_VS_OFFICIAL, f"step {i}: rel L2 {rel_l2(a, e):.2e}"


@pytest.mark.parametrize("name", OFFICIAL_SOLVER_NAMES)
def test_first_step_on_fixed_tensors(name):
    g = torch.Generator().manual_seed(3)
    sample, model_output = torch.randn(2, *SHAPE, generator=g)
    official, timesteps = official_scheduler(name, 40, 5.0)
    expected = official.step(model_output, timesteps[0], sample, return_dict=False)[0]
    actual = make_solver(name, 40, 5.0).step(model_output, timesteps[0], sample)
    assert rel_l2(actual, expected) <= SOLVER_VS_OFFICIAL


@pytest.mark.parametrize("name", OFFICIAL_SOLVER_NAMES)
def test_bfloat16_model_output_on_float32_sample(name):
    # The dtype each official solver hands back differs (UniPC: the sample's, DPM++: the data
    # prediction's); ours must hand back the same.
    g = torch.Generator().manual_seed(5)
    official, timesteps = official_scheduler(name, 4, 5.0)
    ours = make_solver(name, 4, 5.0)
    x_official = x_ours = torch.randn(SHAPE, generator=g)
    for t in timesteps:
        model_output = torch.randn(SHAPE, generator=g).bfloat16()
        x_official = official.step(model_output, t, x_official, return_dict=False)[0]
        x_ours = ours.step(model_output, t, x_ours)
        assert x_ours.dtype == x_official.dtype
        assert rel_l2(x_ours, x_official) <= SOLVER_VS_OFFICIAL
