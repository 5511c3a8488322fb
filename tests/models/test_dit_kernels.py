"""The DiT with each ``wan_kernels`` backend: official parity in float32, and bfloat16 against the
``torch`` backend (the plain composition, bit for bit)."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.backends import backend  # noqa: F401  (the fixture)
from tests.models import test_dit_parity
from tests.models.test_dit_parity import batch_contexts, make_inputs
from tests.tolerances import DIT_BF16_VS_FP32, rel_l2
from wan_runtime.models import WanModel

pytestmark = pytest.mark.usefixtures("backend")
CASES = [("i2v_dit_dir", False), ("ti2v_dit_dir", True)]


def _forward(model: WanModel, per_token: bool, seed: int = 3) -> torch.Tensor:
    x, t, contexts, y = make_inputs(model.config.model_type, seed=seed, per_token=per_token)
    with torch.no_grad():
        return model(x, t, batch_contexts(contexts), y)


@pytest.mark.parametrize(("fixture", "per_token"), CASES)
def test_float32_matches_official(request, fixture, per_token):
    test_dit_parity.test_forward_matches_official(request, fixture, per_token)


@pytest.mark.parametrize("convert", [False, True], ids=["float32-norms", "converted"])
@pytest.mark.parametrize(("fixture", "per_token"), CASES)
def test_bfloat16_matches_torch_backend(request, fixture, per_token, convert):
    """bfloat16 weights (norm weights too when ``convert``: q/k norms then run unfused)."""
    model = WanModel.from_pretrained(request.getfixturevalue(fixture), dtype=torch.bfloat16,
                                     convert_model_dtype=convert)
    got = _forward(model, per_token)
    wan_kernels.set_backend("torch")
    want = _forward(model, per_token)
    assert got.dtype == torch.float32
    assert rel_l2(got, want) <= DIT_BF16_VS_FP32
