"""wan_kernels.integrations.diffusers: a tiny diffusers WanTransformer3DModel on the fused ops.

With the ``torch`` backend the patched blocks run diffusers' arithmetic op for op (the references
are the same torch expressions), so the output is bitwise unchanged. The fused backends reduce the
LayerNorm statistics in another order, about one float32 ulp in the normalised value, so they
match within the float32 tolerance of the kernel tests.
"""

from __future__ import annotations

import pickle

import pytest
import torch

import wan_kernels
from tests.kernels.cases import randn
from tests.kernels.tolerances import assert_matches

pytest.importorskip("diffusers.models.transformers.transformer_wan")

from diffusers.models.transformers.transformer_wan import WanTransformer3DModel  # noqa: E402

from wan_kernels.integrations import diffusers as integration  # noqa: E402

# Three heads of 16 (C = 48, not a power of two), two blocks, affine cross-attention norm.
CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=3, attention_head_dim=16, in_channels=4,
              out_channels=4, text_dim=16, freq_dim=16, ffn_dim=40, num_layers=2, cross_attn_norm=True,
              eps=1e-6, rope_max_seq_len=32)
LATENT = (2, 4, 3, 8, 8)
TOKENS = 3 * 4 * 4
# Wan2.1/2.2-A14B: one timestep per sample; Wan2.2 ti2v: one per token.
TIMESTEPS = {"per_sample": torch.tensor([300.0, 700.0]),
             "per_token": torch.linspace(0, 999, 2 * TOKENS).view(2, -1)}


def _model(dtype: torch.dtype) -> WanTransformer3DModel:
    """The tiny model in ``dtype``, its ``_keep_in_fp32_modules`` in float32 as ``from_pretrained``
    with ``torch_dtype`` keeps them (what a real checkpoint loads as)."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**CONFIG).eval()
    for name, param in model.named_parameters():
        keep = any(part in model._keep_in_fp32_modules for part in name.split("."))
        param.data = param.data.to(torch.float32 if keep else dtype)
    return model.to(randn((1,)).device)


def _forward_with_grad(model: WanTransformer3DModel, timestep: torch.Tensor) -> torch.Tensor:
    dtype = model.patch_embedding.weight.dtype
    latents, context = randn(LATENT, dtype, seed=1), randn((2, 5, 16), dtype, seed=2)
    return model(latents, timestep.to(latents.device), context, return_dict=False)[0]


_forward = torch.inference_mode()(_forward_with_grad)


def _weight_grads(model: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    model.zero_grad()
    out = _forward_with_grad(model, TIMESTEPS["per_token"])
    out.backward(randn(tuple(out.shape), out.dtype, seed=3))
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _relative_error(actual: torch.Tensor, exact: torch.Tensor) -> float:
    return float((actual.double() - exact).norm() / exact.norm())


def test_fine_tuning_gradients_as_accurate_as_the_original(backend):
    """Training through the patched model (a LoRA, say) gets the original's gradients: bitwise on
    the ``torch`` backend; on a fused one each parameter's gradient is as close to a float64
    computation's as the original float32 model's is, within half again (the norms' float32 sums
    in another order move the forward by an ulp, and gradients such as the cross-attention key
    bias's, small differences of large terms, amplify it: up to 1.8e-6 relative to the original's
    float32 gradient, while both stay within 2.6e-6 of float64 and the patched at most 1.23x the
    original's error, measured on ``cpp``)."""
    exact = _weight_grads(_model(torch.float64).double())
    model = _model(torch.float32).train()
    original = _weight_grads(model)
    patched = _weight_grads(integration.apply(model))
    assert patched.keys() == original.keys() == exact.keys()
    for name, grad in original.items():
        if backend == "torch":
            assert torch.equal(patched[name], grad), name
        else:
            limit = 1.5 * _relative_error(grad, exact[name])
            assert _relative_error(patched[name], exact[name]) <= limit, name


@pytest.mark.parametrize("timesteps", sorted(TIMESTEPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_unchanged(backend, dtype, timesteps):
    model = _model(dtype)
    expected = _forward(model, TIMESTEPS[timesteps])
    actual = _forward(integration.apply(model), TIMESTEPS[timesteps])
    if backend == "torch":
        assert torch.equal(actual, expected)
    else:
        assert_matches(actual, expected, dtype)


@pytest.mark.parametrize("timestep", [torch.tensor([300.0]), torch.linspace(0, 999, TOKENS).view(1, -1)],
                         ids=["per_sample", "per_token"])
def test_one_timestep_for_the_whole_batch(backend, timestep):
    """diffusers broadcasts a batch-1 timestep over the batch; so do the patched blocks."""
    model = _model(torch.float32)
    expected = _forward(model, timestep)
    actual = _forward(integration.apply(model), timestep)
    assert_matches(actual, expected, torch.float32)


def test_a_patched_model_pickles():
    """A pickled copy of the whole model (torch.save of it, a spawned process's copy) loads back
    patched."""
    model = integration.apply(_model(torch.float32))
    expected = _forward(model, TIMESTEPS["per_sample"])
    loaded = pickle.loads(pickle.dumps(model))
    assert integration.is_applied(loaded)
    assert loaded.blocks[0].forward.args == (loaded.blocks[0],)
    assert torch.equal(_forward(loaded, TIMESTEPS["per_sample"]), expected)


def test_a_float64_model_is_told_to_run_unpatched():
    model = integration.apply(_model(torch.float64).double())
    with pytest.raises(ValueError, match="the fused blocks run float32, bfloat16 or float16 models, this "
                                         r"one runs torch.float64; call wan_kernels.integrations.diffusers"):
        _forward(model, TIMESTEPS["per_sample"])
    assert _forward(integration.remove(model), TIMESTEPS["per_sample"]).dtype == torch.float64


def test_apply_is_idempotent_and_removable():
    model = _model(torch.float32)
    expected = _forward(model, TIMESTEPS["per_sample"])
    assert not integration.is_applied(model)
    integration.apply(model)
    forwards = [block.forward for block in model.blocks]
    assert integration.apply(model) is model and integration.is_applied(model)
    assert [block.forward for block in model.blocks] == forwards
    wan_kernels.set_backend("torch")
    try:
        assert torch.equal(_forward(model, TIMESTEPS["per_sample"]), expected)
    finally:
        wan_kernels.set_backend("auto")
    integration.remove(model)
    assert not integration.is_applied(model) and "forward" not in vars(model.blocks[0])


def test_refuses_other_models():
    with pytest.raises(TypeError, match="expects a diffusers WanTransformer3DModel, got torch.nn.modules"):
        integration.apply(torch.nn.Linear(2, 2))


def test_refuses_blocks_whose_forward_is_already_replaced():
    model = _model(torch.float32)
    model.blocks[1].forward = model.blocks[1].forward
    with pytest.raises(ValueError, match="forward is already replaced"):
        integration.apply(model)
    assert "forward" not in vars(model.blocks[0])


def test_remove_refuses_blocks_wrapped_after_apply():
    model = integration.apply(_model(torch.float32))
    fused = model.blocks[1].forward
    model.blocks[1].forward = lambda *args, **kwargs: fused(*args, **kwargs)  # as a diffusers hook wraps it
    with pytest.raises(ValueError, match="wrapped by something else .* remove it first"):
        integration.remove(model)
    assert not integration.is_applied(model) and integration._applied(model.blocks[0])
    del model.blocks[1].forward
    integration.remove(model)
    assert all("forward" not in vars(block) for block in model.blocks)


def test_remove_leaves_a_model_apply_never_patched_alone():
    model = _model(torch.float32)
    wrapper = model.blocks[0].forward  # as a diffusers hook installs one
    model.blocks[0].forward = wrapper
    assert integration.remove(model) is model and vars(model.blocks[0])["forward"] is wrapper


def test_compile_repeated_blocks_traces_the_fused_forward():
    """The blocks keep their class, so diffusers' regional compilation finds them, and the fused
    forward compiles without graph breaks."""
    torch._dynamo.reset()
    model = _model(torch.float32)
    expected = _forward(integration.apply(model), TIMESTEPS["per_sample"])
    model.compile_repeated_blocks(fullgraph=True)
    assert_matches(_forward(model, TIMESTEPS["per_sample"]), expected, torch.float32)
