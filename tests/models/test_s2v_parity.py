"""Our S2V DiT against the official ``WanModel_S2V`` on the same weights, float32, CPU."""

from __future__ import annotations

import pytest
import torch

from tests.models.s2v_helpers import official_s2v, s2v_inputs
from tests.tolerances import DIT_FP32_VS_OFFICIAL, rel_l2
from wan_runtime.models.s2v_dit import MOTION_FRAMES, WanModelS2V
from wan_runtime.tiny_checkpoints import TINY_S2V, random_dit, write_dit


@pytest.fixture(scope="module")
def s2v_dir(tmp_path_factory):
    """The tiny S2V DiT, sharded as the release root is."""
    return write_dit(tmp_path_factory.mktemp("s2v"), TINY_S2V, seed=3, shards=2, model_class=WanModelS2V)


def official_forward(ref, inputs, drop_motion_frames, with_pose=True):
    """The official call of ``speech2video.generate`` (zeros as cond_states when there is no pose)."""
    pose = inputs["pose"] if with_pose else torch.zeros_like(inputs["pose"])
    out = ref(
        list(inputs["x"]), t=inputs["t"], context=list(inputs["context"]), seq_len=None,
        ref_latents=inputs["ref_latents"], motion_latents=inputs["motion_latents"], cond_states=pose,
        audio_input=inputs["audio"], motion_frames=list(MOTION_FRAMES), drop_motion_frames=drop_motion_frames,
    )
    return torch.stack(out)


@pytest.mark.parametrize(("drop_motion_frames", "with_pose"), [(False, True), (True, True), (False, False)])
def test_forward_matches_official(s2v_dir, drop_motion_frames, with_pose):
    ours = WanModelS2V.from_pretrained(s2v_dir)
    ref = official_s2v("model_s2v").WanModel_S2V.from_pretrained(s2v_dir).eval()
    inputs = s2v_inputs(TINY_S2V, seed=4)
    with torch.no_grad():
        got = ours(**{**inputs, "pose": inputs["pose"] if with_pose else None},
                   drop_motion_frames=drop_motion_frames)
        want = official_forward(ref, inputs, drop_motion_frames, with_pose)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert want.abs().mean() > 0.1, "degenerate reference output"
    assert rel_l2(got, want) <= DIT_FP32_VS_OFFICIAL


def test_fewer_motion_frames_are_zero_padded(s2v_dir):
    """Motion latents shorter than the 19 FramePack frames (the official pads them in front)."""
    ours = WanModelS2V.from_pretrained(s2v_dir)
    ref = official_s2v("model_s2v").WanModel_S2V.from_pretrained(s2v_dir).eval()
    inputs = s2v_inputs(TINY_S2V, seed=5, motion=6, size=24)
    with torch.no_grad():
        assert rel_l2(ours(**inputs), official_forward(ref, inputs, False)) <= DIT_FP32_VS_OFFICIAL


def test_loads_official_save_pretrained(tmp_path):
    """A folder written by the official class's own ``save_pretrained`` loads and matches."""
    official = official_s2v("model_s2v")
    config = {k: v for k, v in TINY_S2V.to_official_json().items() if not k.startswith("_")}
    ref = official.WanModel_S2V(**config).eval()
    # The official init zeroes the head, the audio output projections and more: use random weights.
    ref.load_state_dict(random_dit(TINY_S2V, seed=6, model_class=WanModelS2V).state_dict())
    ref.save_pretrained(tmp_path, max_shard_size="1MB")
    ours = WanModelS2V.from_pretrained(tmp_path)
    inputs = s2v_inputs(TINY_S2V, seed=7)
    with torch.no_grad():
        assert rel_l2(ours(**inputs), official_forward(ref, inputs, False)) <= DIT_FP32_VS_OFFICIAL


def test_stages_compose_and_samples_are_independent(s2v_dir):
    """prepare -> blocks[0] -> blocks[1:] -> finish is the forward; a batch equals its samples alone."""
    model = WanModelS2V.from_pretrained(s2v_dir)
    inputs = s2v_inputs(TINY_S2V, seed=8, batch=2)
    with torch.no_grad():
        tokens, cond = model.prepare(**inputs)
        tokens = model.run_blocks(model.run_blocks(tokens, cond, 0, 1), cond, 1)
        batched = model(**inputs)
        assert torch.equal(model.finish(tokens, cond), batched)
        single = model(**{k: v[1:] for k, v in inputs.items()})
    assert rel_l2(batched[1:], single) <= DIT_FP32_VS_OFFICIAL
