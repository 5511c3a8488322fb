"""``WAN_INFERENCE_ONLY``: loaded models refuse training unless it is 0."""

from __future__ import annotations

import pytest
import torch

from wan_runtime.errors import InputError, WanError
from wan_runtime.inference_only import ENV_VAR, guard, inference_only_enabled
from wan_runtime.pipelines import load_pipeline


def _modules(pipeline) -> list[torch.nn.Module]:
    return [*pipeline.dits.values(), pipeline.text_encoder.model, pipeline.vae.model]


def test_loaded_models_refuse_training_by_default(monkeypatch, ti2v_root):
    monkeypatch.delenv(ENV_VAR, raising=False)
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    for module in _modules(pipeline):
        with pytest.raises(WanError, match=f"inference only.*{ENV_VAR}=0"):
            module.train()
        with pytest.raises(WanError, match="requires_grad_"):
            module.requires_grad_()
        submodule = next(m for m in module.modules() if m is not module)
        with pytest.raises(WanError):
            submodule.train(True)
        assert module.eval() is module and module.requires_grad_(False) is module
        assert not module.training and not any(p.requires_grad for p in module.parameters())


def test_zero_lifts_the_guard(monkeypatch, ti2v_root):
    monkeypatch.setenv(ENV_VAR, "0")
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    model = pipeline.dits["dit"]
    model.train()
    model.requires_grad_()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_bad_value_is_an_input_error(monkeypatch, ti2v_root):
    monkeypatch.setenv(ENV_VAR, "yes")
    message = rf"{ENV_VAR} must be 1 \(refuse training, the default\) or 0 \(allow it\), got 'yes'"
    with pytest.raises(InputError, match=message):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)


def test_empty_is_the_default(monkeypatch):
    """``export WAN_INFERENCE_ONLY=`` blanks a variable, as unset."""
    monkeypatch.setenv(ENV_VAR, " ")
    assert inference_only_enabled()


def test_guard_keeps_the_module_usable(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    layer = guard(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert isinstance(layer, torch.nn.Sequential) and set(layer.state_dict()) == {"0.weight", "0.bias"}
    assert layer(torch.ones(1, 2)).shape == (1, 2)
