"""Our DiT against the official ``wan.modules.model.WanModel`` on the same weights, float32, CPU."""

from __future__ import annotations

import pytest
import torch

from tests.official import official_module
from tests.tolerances import DIT_FP32_VS_OFFICIAL, rel_l2
from wan_runtime.models import WanModel

PADDING = 5  # extra official sequence slots, as sequence-parallel runs pad seq_len


def official_forward(ref, x, t, contexts, y):
    """Call the official model as its pipelines do: lists of samples, a padded ``seq_len`` and
    ``t`` of shape [B, seq_len] (its [B] path only broadcasts for B == 1)."""
    b, tokens = x.size(0), x[0, 0].numel() // 4
    seq_len = tokens + PADDING
    t = t[:, None].expand(b, tokens) if t.dim() == 1 else t
    t = torch.cat([t, t[:, -1:].expand(b, PADDING)], dim=1)
    out = ref(list(x), t, contexts, seq_len, y=None if y is None else list(y))
    return torch.stack(out)


def make_inputs(model_type: str, seed: int, per_token: bool):
    g = torch.Generator().manual_seed(seed)
    b, f, h, w = 2, 3, 8, 10
    x = torch.randn(b, 16 if model_type == "i2v" else 48, f, h, w, generator=g)
    y = torch.randn(b, 20, f, h, w, generator=g) if model_type == "i2v" else None
    contexts = [torch.randn(7, 4096, generator=g), torch.randn(12, 4096, generator=g)]
    if per_token:
        first_frame = h * w // 4
        t = torch.tensor([[700.0], [300.0]]).repeat(1, f * first_frame)
        t[:, :first_frame] = 0.0
    else:
        t = torch.tensor([999.0, 250.0])
    return x, t, contexts, y


def batch_contexts(contexts):
    return torch.nn.utils.rnn.pad_sequence(contexts, batch_first=True)


@pytest.mark.parametrize(
    ("fixture", "per_token"),
    [("i2v_dit_dir", False), ("ti2v_dit_dir", True), ("ti2v_dit_dir", False)],
)
def test_forward_matches_official(request, fixture, per_token):
    folder = request.getfixturevalue(fixture)
    ours = WanModel.from_pretrained(folder)
    ref = official_module("modules.model").WanModel.from_pretrained(folder).eval()
    x, t, contexts, y = make_inputs(ours.config.model_type, seed=3, per_token=per_token)
    with torch.no_grad():
        got = ours(x, t, batch_contexts(contexts), y)
        want = official_forward(ref, x, t, contexts, y)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert want.abs().mean() > 0.1, "degenerate reference output"
    assert rel_l2(got, want) <= DIT_FP32_VS_OFFICIAL


@pytest.mark.parametrize("shard_size", [None, "2MB"])
def test_loads_official_save_pretrained(tmp_path, shard_size):
    """A folder written by the official class itself (single file and sharded) loads and matches."""
    official = official_module("modules.model")
    torch.manual_seed(0)
    ref = official.WanModel(
        model_type="i2v", in_dim=36, out_dim=16, dim=256, ffn_dim=512, num_heads=2, num_layers=2
    ).eval()
    torch.nn.init.normal_(ref.head.head.weight, std=0.05)  # the official init zeroes the head
    kwargs = {} if shard_size is None else {"max_shard_size": shard_size}
    ref.save_pretrained(tmp_path, **kwargs)
    sharded = any(p.name.endswith(".index.json") for p in tmp_path.iterdir())
    assert sharded == (shard_size is not None)
    ours = WanModel.from_pretrained(tmp_path)
    x, t, contexts, y = make_inputs("i2v", seed=4, per_token=False)
    with torch.no_grad():
        assert rel_l2(ours(x, t, batch_contexts(contexts), y), official_forward(ref, x, t, contexts, y)) \
            <= DIT_FP32_VS_OFFICIAL


def test_stages_compose_to_forward(ti2v_dit_dir):
    """prepare -> blocks[0] -> blocks[1:] -> finish is the forward (where a step cache sits)."""
    model = WanModel.from_pretrained(ti2v_dit_dir)
    x, t, contexts, _ = make_inputs("ti2v", seed=5, per_token=True)
    context = batch_contexts(contexts)
    with torch.no_grad():
        tokens, cond = model.prepare(x, t, context)
        tokens = model.run_blocks(tokens, cond, 0, 1)
        tokens = model.run_blocks(tokens, cond, 1)
        staged = model.finish(tokens, cond)
        assert torch.equal(staged, model(x, t, context))


def test_samples_are_independent(i2v_dit_dir):
    """Each sample of a batch equals the same sample run alone (no cross-sample leakage)."""
    model = WanModel.from_pretrained(i2v_dit_dir)
    x, t, contexts, y = make_inputs("i2v", seed=6, per_token=False)
    with torch.no_grad():
        batched = model(x, t, batch_contexts(contexts), y)
        single = model(x[1:], t[1:], contexts[1][None], y[1:])
    assert rel_l2(batched[1:], single) <= DIT_FP32_VS_OFFICIAL
