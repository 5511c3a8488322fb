"""The peak memory estimate: the live-bytes counter on known allocations, the meta device's count
of each stage equal to the count of the same work on real tensors (the tiny pipelines' models,
float32 on the CPU), and the estimate's stages, peak and advice."""

from __future__ import annotations

import contextlib
import gc
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tests.pipelines.test_memory_plan import plan as cuda_plan
from wan_runtime.cache import CacheConfig
from wan_runtime.errors import InputError
from wan_runtime.models.cuda_graphs import RerunBackend
from wan_runtime.models.vae_loading import codec
from wan_runtime.pipelines import activation_memory, check_pipeline, load_pipeline
from wan_runtime.pipelines.activation_memory import (
    MemoryEstimate,
    StagePeak,
    StepCache,
    VideoShape,
    decode_work,
    encode_work,
    estimate_memory,
    s2v_encode_work,
    s2v_step_work,
    speech_work,
    step_work,
)
from wan_runtime.pipelines.live_bytes import FusedAttention, LiveBytes, QuickNormalize, peak_bytes, pooled
from wan_runtime.pipelines.memory_advice import Step
from wan_runtime.pipelines.memory_plan import AUDIO_ENCODER, TEXT_ENCODER, VAE
from wan_runtime.tasks import task_spec

KIB = 1024
GIB = 2**30
CPU = torch.device("cpu")


def test_live_bytes_counts_each_storage_until_it_is_freed():
    before = torch.empty(10_000)
    with LiveBytes() as counter:
        a = torch.empty(1000)  # 4000 bytes, a 4096-byte block
        b = a * 2
        assert counter.live == 2 * 4096
        del a
        gc.collect()
        c = b + 1
        assert counter.live == 2 * 4096
        view, part, same = c.view(10, 100), c[:10], c.add_(before[:1000])
        assert counter.live == 2 * 4096 and same is c
        del b, c, view, part, same
        gc.collect()
        assert counter.live == 0
    assert counter.peak == 2 * 4096


def test_a_storage_counts_while_a_tensor_holds_it_though_python_dropped_its_object():
    with LiveBytes() as counter:
        a = torch.empty(256)
        view = a[1:]
        del a
        gc.collect()
        assert counter.live == KIB
        del view
        gc.collect()
        assert counter.live == 0


def test_meta_attention_counts_what_the_fused_kernels_keep():
    """On meta tensors the fused kernel's output and log-sum-exp rows, not the math path's
    scores: the CPU's attention on real tensors, one op whose rows stay inside it, and the rows."""
    def run(device):
        q, k, v = (torch.zeros(1, 4, 300, 16, device=device) for _ in range(3))
        F.scaled_dot_product_attention(q, k, v)

    meta = peak_bytes(run, torch.device("meta"))
    with torch.inference_mode(), LiveBytes() as counter:
        run(CPU)
    rows = 4 * 300 * 4  # float32 per head and query, 4800 bytes: ten 512-byte blocks
    assert meta == counter.peak + 10 * 512 and rows <= 10 * 512
    assert meta < 300 * 300 * 4  # below one head's scores


def test_meta_attention_leaves_a_real_tensors_call_alone():
    q = torch.randn(1, 2, 8, 4)
    with FusedAttention():
        out = F.scaled_dot_product_attention(q, q, q)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q), rtol=0, atol=0)


META = torch.device("meta")
# [1, 8, 3, 6, 5] laid out in memory as a VAE's activations may be.
LAYOUTS = {
    "contiguous": lambda dtype: torch.empty(1, 8, 3, 6, 5, dtype=dtype, device=META),
    "frames first": lambda dtype: torch.empty(1, 3, 8, 6, 5, dtype=dtype, device=META).transpose(1, 2),
    "channels last": lambda dtype: torch.empty(1, 8, 3, 6, 5, dtype=dtype, device=META).to(
        memory_format=torch.channels_last_3d),
    "a slice (not dense)": lambda dtype: torch.empty(1, 8, 3, 6, 9, dtype=dtype, device=META)[..., :5],
}


class _Ops(TorchDispatchMode):
    """Records the name of each aten op run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _normalized(x: torch.Tensor, quick: bool, **arguments) -> tuple[int, tuple, list[str]]:
    """The peak of ``F.normalize(x, **arguments)`` with or without ``QuickNormalize``, its
    result's shape, strides and dtype, and the aten ops it ran."""
    mode, ops = QuickNormalize() if quick else contextlib.nullcontext(), _Ops()
    with torch.inference_mode(), mode, LiveBytes() as counter, ops:
        out = F.normalize(x, **arguments)
    return counter.peak, (out.shape, out.stride(), out.dtype), ops.names


@pytest.mark.parametrize("dim", [1, -1, (1, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_quick_normalize_allocates_what_normalize_allocates(layout, dtype, dim):
    """The same peak and the same quotient (shape, strides, dtype) as the meta kernels' run, which
    a dense input skips."""
    x = LAYOUTS[layout](dtype)
    *quick, ops = _normalized(x, True, dim=dim)
    *slow, slow_ops = _normalized(x, False, dim=dim)
    assert quick == slow and "linalg_vector_norm" in slow_ops
    assert ops == (slow_ops if layout == "a slice (not dense)" else ["new_empty", "empty_like", "empty_like"])


@pytest.mark.parametrize("arguments", [{"p": 1.0, "eps": 1e-3}, {"dim": None}, {"dim": ()}, {"dim": (1, -3)},
                                       {"dim": 5}, {"out": torch.empty(2, 3, 4, 5, device=META)}])
def test_quick_normalize_answers_other_arguments_as_normalize_does(arguments):
    """Another norm is allocated alike; what is no set of dims (all of them, none, one twice, one
    out of range) or an ``out`` runs as it is, or fails as it does."""
    x = torch.empty(2, 3, 4, 5, device=META)
    try:
        slow = _normalized(x, False, **arguments)
    except (IndexError, RuntimeError) as err:
        with pytest.raises(type(err)):
            _normalized(x, True, **arguments)
        return
    quick = _normalized(x, True, **arguments)
    assert quick[:2] == slow[:2]
    assert (quick[2] == ["new_empty", "empty_like", "empty_like"]) == ("p" in arguments)


def test_quick_normalize_runs_normalize_on_real_tensors():
    x = torch.randn(2, 4, 3)
    with QuickNormalize():
        out = F.normalize(x, dim=1)
    torch.testing.assert_close(out, F.normalize(x, dim=1), rtol=0, atol=0)


def real_peak(work, *args, **kwargs) -> int:
    """``work``'s peak count on real CPU tensors."""
    with torch.inference_mode(), LiveBytes() as counter:
        work(*args, device=CPU, **kwargs)
    return counter.peak


def float32_plan(task: str, root):
    return check_pipeline(task, root, device="cpu", dtype=torch.float32)


BOTH_CACHES = CacheConfig(teacache=True, fbcache=True, fb_downsample=2)


@pytest.mark.parametrize(("task", "per_token", "branches", "cache"), [
    ("ti2v-5B", False, 2, None), ("ti2v-5B", True, 2, None), ("ti2v-5B", False, 1, None),
    ("i2v-A14B", False, 2, None), ("ti2v-5B", True, 2, BOTH_CACHES), ("i2v-A14B", False, 2, BOTH_CACHES),
    ("ti2v-5B", False, 1, CacheConfig(teacache=True, teacache_policy="poly")),
])
def test_a_steps_count_on_the_meta_device_is_that_of_real_tensors(
    task, per_token, branches, cache, request
):
    pipeline = request.getfixturevalue("ti2v_pipeline" if task == "ti2v-5B" else "i2v_pipeline")
    plan = float32_plan(task, request.getfixturevalue("ti2v_root" if task == "ti2v-5B" else "i2v_root"))
    name = task_spec(task).dit_names[0]
    label = "DiT" if task == "ti2v-5B" else f"DiT {name}"
    latent = (plan.meta_models[label].config.out_dim, 3, 8, 12)
    args = (latent, branches, per_token)
    step_cache = None if cache is None else StepCache(cache, task_spec(task).cache_models[0])
    meta = peak_bytes(step_work, plan.meta_models[label], *args, cache=step_cache)
    assert meta == real_peak(step_work, pipeline.dits[name], *args, cache=step_cache)
    # The rope tables count each time.
    assert peak_bytes(step_work, plan.meta_models[label], *args, cache=step_cache) == meta
    if cache is not None and branches == 2:  # the cond branch's two float32 residuals held on
        tokens = 3 * 8 * 12 // 4
        residuals = 2 * tokens * plan.meta_models[label].config.dim * 4
        assert meta >= peak_bytes(step_work, plan.meta_models[label], *args) + residuals


@pytest.mark.parametrize(("vae_tiling", "latent"), [
    (0, (16, 2, 12, 16)), (64, (16, 2, 12, 16)), (64, (16, 1, 20, 40)),
], ids=["whole", "6-tiles", "21-tiles"])
def test_the_vaes_count_on_the_meta_device_is_that_of_real_tensors(
    vae_tiling, latent, i2v_pipeline, i2v_root
):
    """The meta device decodes each kind of tile once (9 of the 21), the real tensors every one."""
    vae = codec(float32_plan("i2v-A14B", i2v_root).meta_models[VAE])
    assert peak_bytes(decode_work, vae, latent, vae_tiling) == real_peak(
        decode_work, i2v_pipeline.vae, latent, vae_tiling)
    assert peak_bytes(encode_work, vae, 9, 64, 96) == real_peak(encode_work, i2v_pipeline.vae, 9, 64, 96)


@pytest.fixture(scope="module")
def s2v_pipeline(s2v_root):
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32)
    pipeline.motion_frames = (9, 3)  # the release's 73 frames of motion context take minutes on the CPU
    return pipeline


@pytest.mark.parametrize(("motion", "pose", "branches", "cache"), [
    (False, False, 2, None), (True, True, 1, None), (True, False, 2, BOTH_CACHES),
])
def test_an_s2v_steps_count_on_the_meta_device_is_that_of_real_tensors(
    motion, pose, branches, cache, s2v_pipeline, s2v_root
):
    plan = float32_plan("s2v-14B", s2v_root)
    args = ((16, 2, 8, 8), 8, branches, motion, pose, (9, 64, 64, torch.float32), (9, 3))
    step_cache = None if cache is None else StepCache(cache, "s2v")
    meta = peak_bytes(s2v_step_work, plan.meta_models["DiT"], *args, cache=step_cache)
    assert meta == real_peak(s2v_step_work, s2v_pipeline.dits["dit"], *args, cache=step_cache)


@pytest.mark.parametrize("pose_frames", [0, 9])
def test_s2vs_encodes_and_the_speech_count_on_the_meta_device_as_on_real_tensors(
    pose_frames, s2v_pipeline, s2v_root
):
    plan = float32_plan("s2v-14B", s2v_root)
    args = (pose_frames, (9, 32, 32, torch.float32))
    vae = codec(plan.meta_models[VAE])
    assert peak_bytes(s2v_encode_work, vae, *args) == real_peak(s2v_encode_work, s2v_pipeline.vae, *args)
    speech = peak_bytes(speech_work, plan.meta_models[AUDIO_ENCODER], 8000)
    assert speech == real_peak(speech_work, s2v_pipeline.audio_encoder.model, 8000)


def test_s2v_counts_the_speech_when_given_and_a_later_clips_motion(s2v_root):
    plan = cuda_plan("s2v-14B", s2v_root, offload_model=True)
    spec = task_spec("s2v-14B")
    one = estimate_memory(plan, spec, VideoShape(64, 64, 8, True, 4.5))
    assert [(s.stage, s.model) for s in one.stages] == [
        ("audio_encode", AUDIO_ENCODER), ("text_encode", TEXT_ENCODER), ("vae_encode", VAE),
        ("denoise", "DiT"), ("vae_decode", VAE)]
    assert one.stages[0].activations == 0  # no samples given
    more = estimate_memory(plan, spec, VideoShape(64, 64, 8, True, 4.5, clips=3, audio_samples=16000))
    assert more.stages[0].activations > 0
    for stage in ("denoise", "vae_decode"):
        by_stage = [{s.stage: s.activations for s in e.stages}[stage] for e in (one, more)]
        assert by_stage[1] > by_stage[0]


@pytest.mark.parametrize(("task", "given", "video", "message"), [
    ("ti2v-5B", "ti2v-5B", VideoShape(64, 64, 8, False, 5.0), r"VideoShape.frame_num must be 4n\+1"),
    ("ti2v-5B", "ti2v-5B", VideoShape(64, 64, 0, False, 5.0), r"VideoShape.frame_num must be 4n\+1"),
    ("ti2v-5B", "ti2v-5B", VideoShape(64, 48, 5, False, 5.0), "height must be a positive multiple of 32"),
    ("s2v-14B", "s2v-14B", VideoShape(64, 64, 7, True, 4.5), "frame_num .* must be a multiple of 4"),
    ("s2v-14B", "s2v-14B", VideoShape(64, 64, 8, False, 4.5), "VideoShape.image must be True for s2v-14B"),
    ("s2v-14B", "ti2v-5B", VideoShape(64, 64, 9, False, 5.0), r"holds 1 s2v DiT\(s\), not the ti2v-5B"),
    ("ti2v-5B", "s2v-14B", VideoShape(64, 64, 8, True, 4.5), r"holds 1 ti2v DiT\(s\), not the s2v-14B"),
    ("ti2v-5B", "i2v-A14B", VideoShape(64, 64, 9, True, 3.5), r"holds 1 ti2v DiT\(s\), not the i2v-A14B"),
    ("ti2v-5B", "ti2v-5B", VideoShape(64, 64, 5, "yes", 5.0), "VideoShape.image must be True or False"),
    ("ti2v-5B", "ti2v-5B", VideoShape(64, 64, 5, False, [5.0]), "one model: VideoShape.guide is one"),
    ("i2v-A14B", "i2v-A14B", VideoShape(64, 64, 5, True, (3.5,)), "VideoShape.guide for i2v-A14B is a"),
    ("s2v-14B", "s2v-14B", VideoShape(64, 64, 8, True, None), "VideoShape.guide must be a finite number"),
    ("ti2v-5B", "ti2v-5B", VideoShape(64, 64, 5, False, 5.0, 96), "VideoShape.vae_tiling must be a tile"),
    ("ti2v-5B", "ti2v-5B", VideoShape(64, 64, 5, False, 5.0, "512"), "VideoShape.vae_tiling must be a tile"),
    ("s2v-14B", "s2v-14B", VideoShape(64, 64, 8, True, 4.5, clips=0), "VideoShape.clips must be a positive"),
    ("s2v-14B", "s2v-14B", VideoShape(64, 64, 8, True, 4.5, pose=1), "VideoShape.pose must be True or False"),
    ("s2v-14B", "s2v-14B", VideoShape(64, 64, 8, True, 4.5, audio_samples=-5), "VideoShape.audio_samples"),
    ("s2v-14B", "s2v-14B", VideoShape(64, 64, 8, True, 4.5, motion_frames=(-1, 0)),
     r"VideoShape.motion_frames must be the motion context's \(pixel, latent\) frame counts, positive"),
    ("ti2v-5B", "ti2v-5B", (64, 64, 5), "a video must be a VideoShape, got tuple"),
], ids=["frames-8", "frames-0", "height", "infer-frames", "no-image", "s2v-plan", "ti2v-plan", "one-dit",
        "image-str", "one-guide", "guide-pair", "guide-none", "tile-96", "tile-str", "clips-0", "pose-int",
        "samples", "motion", "not-a-video"])
def test_an_estimate_of_what_generate_refuses_is_refused(request, task, given, video, message):
    """Before loading, the estimate is the only check of the video's shape: what generate refuses,
    or a plan of another task's models, is an InputError, not an error deep in a stage."""
    plan = check_pipeline(task, request.getfixturevalue(f"{task.split('-')[0]}_root"), device="cpu",
                          dtype=torch.float32)
    with pytest.raises(InputError, match=message):
        estimate_memory(plan, task_spec(given), video)


def test_an_estimate_resolves_the_guide_and_tiles_as_generate(ti2v_root, i2v_root):
    ti2v = cuda_plan("ti2v-5B", ti2v_root)
    tiled = estimate_memory(ti2v, task_spec("ti2v-5B"), VideoShape(64, 64, 5, False, 5, True))
    assert tiled == estimate_memory(ti2v, task_spec("ti2v-5B"), VideoShape(64, 64, 5, False, 5.0, 512))
    i2v, spec = cuda_plan("i2v-A14B", i2v_root), task_spec("i2v-A14B")
    pair = estimate_memory(i2v, spec, VideoShape(64, 64, 5, True, [1.0, 3.5]))
    assert pair == estimate_memory(i2v, spec, VideoShape(64, 64, 5, True, (1.0, 3.5)))


def test_i2v_has_a_stage_per_model_and_the_peak_is_the_largest(i2v_root):
    plan = cuda_plan("i2v-A14B", i2v_root, offload_model=True)
    estimate = estimate_memory(plan, task_spec("i2v-A14B"), VideoShape(96, 64, 9, True, (3.5, 3.5)))
    assert [(s.stage, s.model) for s in estimate.stages] == [
        ("text_encode", TEXT_ENCODER), ("vae_encode", VAE), ("denoise", "DiT high_noise"),
        ("denoise", "DiT low_noise"), ("vae_decode", VAE)]
    for stage in estimate.stages:
        assert stage.weights == plan.weights_while(stage.model)
        assert stage.activations > 0 or stage.stage == "text_encode"
    assert estimate.peak == max(s.weights + s.activations for s in estimate.stages)
    assert not any(s.gathering for s in estimate.stages)  # one process: no FSDP
    assert estimate.busiest.total == estimate.peak


@pytest.mark.parametrize("cache", [None, CacheConfig(fbcache=True)], ids=["uncached", "fbcache"])
def test_graphed_steps_hold_the_graphs_buffers_and_pool_too(i2v_root, cache, monkeypatch):
    """Each kind of blocks' call holds a copy of its inputs, and their output one buffer more; what
    the blocks allocate stays in the graphs' pool, apart from what the rest of the step allocates."""
    plan, spec = cuda_plan("i2v-A14B", i2v_root), task_spec("i2v-A14B")
    c = plan.meta_models["DiT high_noise"].config
    tokens = 3 * 4 * 6
    # The text (bfloat16), the modulation rows and time embedding, the rope tables.
    cond = c.text_len * c.dim * 2 + 7 * c.dim * 4 + tokens * c.head_dim * 4
    first = tokens * c.dim * 2 + cond  # block 0 takes the bfloat16 patch embedding
    rest = tokens * c.dim * 4 + cond  # the blocks after FBCache's split, the float32 stream
    output = tokens * c.dim * 4
    held = first + output + (0 if cache is None else rest)
    video = VideoShape(96, 64, 9, True, (3.5, 3.5), cache=cache)
    eager, graphed = (estimate_memory(plan, spec, video, cuda_graphs=graphs) for graphs in (False, True))
    # The buffers alone: replays that allocate where the rest of the step does.
    monkeypatch.setattr(activation_memory, "_PooledRerun", RerunBackend)
    buffered = estimate_memory(plan, spec, video, cuda_graphs=True)
    for before, buffers, after in zip(eager.stages, buffered.stages, graphed.stages, strict=True):
        if before.stage == "denoise":
            assert buffers.activations - before.activations == held
            assert after.activations > buffers.activations
        else:
            assert before.activations == buffers.activations == after.activations


def test_a_graphs_pool_keeps_the_most_it_held_beside_the_other_tensors():
    def step() -> torch.Tensor:
        with pooled():
            replayed = torch.empty(1024, device="meta")  # 4 KiB, freed into the pool
            del replayed
        return torch.empty(256, device="meta")  # 1 KiB beside the pool's 4

    assert peak_bytes(step) == 5 * 1024


def test_guidance_at_scale_1_runs_one_branch_and_takes_less(i2v_root):
    plan = cuda_plan("i2v-A14B", i2v_root)
    spec = task_spec("i2v-A14B")
    both = estimate_memory(plan, spec, VideoShape(96, 64, 9, True, (3.5, 3.5)))
    high_only = estimate_memory(plan, spec, VideoShape(96, 64, 9, True, (1.0, 3.5)))
    steps = {s.model: s.activations for s in both.stages if s.stage == "denoise"}
    one = {s.model: s.activations for s in high_only.stages if s.stage == "denoise"}
    assert one["DiT high_noise"] == steps["DiT high_noise"] > one["DiT low_noise"]


def test_ti2v_without_an_image_has_no_encode_and_tiles_shrink_the_decode(ti2v_root):
    plan = cuda_plan("ti2v-5B", ti2v_root, t5_cpu=True)
    spec = task_spec("ti2v-5B")
    whole = estimate_memory(plan, spec, VideoShape(512, 256, 9, False, 5.0))
    tiled = estimate_memory(plan, spec, VideoShape(512, 256, 9, False, 5.0, vae_tiling=128))
    assert [s.stage for s in whole.stages] == ["denoise", "vae_decode"]  # the T5 stays on the CPU
    assert tiled.stages[-1].activations < whole.stages[-1].activations / 2
    # The advice follows the stage of the peak.
    assert whole.busiest.stage == "vae_decode" and "try vae_tiling (the VAE decodes in tiles" in whole.remedy
    assert tiled.busiest.stage == "vae_decode" and "try vae_tiling 64 (smaller tiles)" in tiled.remedy


@pytest.mark.parametrize("vae_tiling", [512, 64 * 10**10])
def test_a_tile_covering_the_frame_costs_what_the_whole_frames_decode_costs(ti2v_root, vae_tiling):
    plan = cuda_plan("ti2v-5B", ti2v_root, t5_cpu=True)
    spec = task_spec("ti2v-5B")
    whole = estimate_memory(plan, spec, VideoShape(512, 256, 9, False, 5.0))
    # The advice halves the tile from the frame's size at most.
    advice = rf"^vae_tiling {vae_tiling}: .* no less than .*; try vae_tiling 256 "
    with pytest.warns(UserWarning, match=advice):
        covering = estimate_memory(plan, spec, VideoShape(512, 256, 9, False, 5.0, vae_tiling=vae_tiling))
    assert covering.stages == whole.stages


def test_tiles_whose_decode_takes_no_less_than_whole_frames_are_warned_of(ti2v_root):
    plan = cuda_plan("ti2v-5B", ti2v_root, t5_cpu=True)
    spec = task_spec("ti2v-5B")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = estimate_memory(plan, spec, VideoShape(512, 256, 9, False, 5.0, vae_tiling=128))
    # Two tiles of 448 pixels a row: each nearly the frame's decode, and the blend's buffers beside it.
    with pytest.warns(UserWarning) as caught:
        large = estimate_memory(plan, spec, VideoShape(512, 256, 9, False, 5.0, vae_tiling=448))
    decode = large.stages[-1].activations
    assert decode > small.stages[-1].activations
    assert [str(w.message) for w in caught] == [
        f"vae_tiling 448: decoding the 512x256 frames in tiles of that size takes {decode / GIB:.2f} GiB of "
        "activations, no less than the 0.20 GiB whole frames take; try vae_tiling 192 (smaller tiles) or "
        "leave vae_tiling out"]


def test_the_peak_is_the_busiest_stages_sum_and_told_as_a_lower_bound():
    stages = [StagePeak("denoise", "DiT", 10, 5), StagePeak("vae_decode", VAE, 2, 20)]
    estimate = MemoryEstimate(torch.device("cuda"), tuple(stages), {})
    assert estimate.peak == 22 and estimate.busiest == stages[1]
    assert "at least" in estimate.describe() and "in the vae_decode" in estimate.describe()
    denoise = MemoryEstimate(torch.device("cuda"), (StagePeak("denoise", "DiT", 10, 5),), {})
    assert denoise.peak == 15


def test_weights_fsdp_gathers_beyond_those_beside_the_activations_can_make_the_peak():
    """Under FSDP a model's stage holds, at one time, the weights beside its activations' peak
    and, at another, the most it gathers (``working``): the stage's peak is the larger."""
    weights = {"DiT": (Step("dit_fsdp", True, "shards"),)}
    text = StagePeak("text_encode", TEXT_ENCODER, 5 * GIB, 0, working=9 * GIB)
    step = StagePeak("denoise", "DiT", 6 * GIB, 4 * GIB, bound=False, working=8 * GIB)
    estimate = MemoryEstimate(torch.device("cuda"), (text, step), weights)
    assert (text.total, step.total) == (9 * GIB, 10 * GIB) and estimate.busiest == step
    assert text.gathering and not step.gathering and estimate.busiest_bound == text
    words = "at least 9.00 GiB of cuda memory at the peak, in the text_encode (weights, 4.00 GiB of them"
    assert estimate.describe(text) == (f"{words} blocks FSDP gathers beside the one the {TEXT_ENCODER} "
                                       "computes, no activations counted)")
    # Weights alone: what lowers them, not a smaller video; a compiled stage's gathered weights
    # are surely held.
    gathering = StagePeak("denoise", "DiT", 2 * GIB, 3 * GIB, bound=False, working=8 * GIB)
    assert gathering.total == 8 * GIB and gathering.sure
    names = " (the command line's flags of those names)"
    assert estimate.remedy_for(gathering) == f"to fit, try dit_fsdp (shards){names}"
    assert "smaller size" in estimate.remedy_for(gathering._replace(working=None))
    assert MemoryEstimate(torch.device("cuda"), (gathering,), {}).remedy == "no option lowers them further"


def test_a_sharded_plans_text_encode_peaks_at_what_fsdp_gathers(ti2v_root):
    sharded = cuda_plan("ti2v-5B", ti2v_root, world=2, dit_fsdp=True, t5_fsdp=True)
    estimate = estimate_memory(sharded, task_spec("ti2v-5B"), VideoShape(64, 64, 5, False, 5.0), ulysses=2)
    text = estimate.stages[0]
    assert text.stage == "text_encode" and text.working == sharded.weights_while(TEXT_ENCODER)
    assert text.weights == sharded.weights_while(TEXT_ENCODER, computing=True) < text.total == text.working


def test_a_pipelines_estimate_resolves_its_arguments_as_generate(ti2v_pipeline, i2v_pipeline):
    from PIL import Image

    spec = task_spec("ti2v-5B")
    estimate = ti2v_pipeline.estimate_memory(size="1280*704", frame_num=9, vae_tiling=True)
    video = VideoShape(1280, 704, 9, False, 5.0, 512)
    assert estimate == estimate_memory(ti2v_pipeline.weight_plan, spec, video)
    # The image sets the shape from the area, as in generate; i2v's one guide scale serves both experts.
    tall = Image.new("RGB", (480, 832), (9, 9, 9))
    estimate = i2v_pipeline.estimate_memory(image=tall, size="832*480", frame_num=5, guide_scale=1.0)
    video = VideoShape(480, 832, 5, True, (1.0, 1.0))
    assert estimate == estimate_memory(i2v_pipeline.weight_plan, task_spec("i2v-A14B"), video)


def test_a_pipelines_estimate_checks_its_arguments(ti2v_pipeline, i2v_pipeline):
    from wan_runtime.errors import InputError

    with pytest.raises(InputError, match="frame_num"):
        ti2v_pipeline.estimate_memory(frame_num=8)
    with pytest.raises(InputError, match="vae_tiling"):
        ti2v_pipeline.estimate_memory(vae_tiling=100)
    with pytest.raises(InputError, match="i2v-A14B needs an input image"):
        i2v_pipeline.estimate_memory()


def test_an_s2v_pipelines_estimate_counts_the_clips_of_its_speech(s2v_pipeline):
    import numpy as np
    from PIL import Image

    from wan_runtime.errors import InputError

    image = Image.new("RGB", (64, 64), (9, 9, 9))
    speech = np.zeros(16000 * 3, dtype=np.float32)  # 48 frames at 16 fps: three clips of 16
    clip = {"image": image, "audio": speech, "infer_frames": 16, "size": "1024*704"}
    estimate = s2v_pipeline.estimate_memory(**clip)
    spec = task_spec("s2v-14B")
    width, height = s2v_pipeline.output_size(spec, image, 1024, 704)
    video = VideoShape(width, height, 16, True, spec.guide_scale, clips=3, audio_samples=speech.size,
                       motion_frames=(9, 3))
    assert estimate == estimate_memory(s2v_pipeline.weight_plan, spec, video)
    one = s2v_pipeline.estimate_memory(**clip, num_clip=1)
    assert one.peak < estimate.peak
    with pytest.raises(InputError, match="driven by speech"):
        s2v_pipeline.estimate_memory(image=image)


def test_per_token_modulation_holds_at_most_two_tables_at_once(ti2v_root):
    """ti2v-5B with an image (and s2v-14B's reference and motion tokens) modulate per token: a
    float32 [L, C] table per modulation row, made as its op is called, not six at once."""
    dit = float32_plan("ti2v-5B", ti2v_root).meta_models["DiT"]
    latent = (dit.config.out_dim, 3, 32, 32)
    tokens, table = 3 * 16 * 16, 3 * 16 * 16 * dit.config.dim * 4
    per_sample = peak_bytes(step_work, dit, latent, 1, False)
    per_token = peak_bytes(step_work, dit, latent, 1, True)
    # Two tables, the tokens' timesteps and row indexes, and the 512-byte rounding of the small ones
    # (made all six at once, they held 2.4 MB more here).
    assert per_token - per_sample <= 2 * table + tokens * (8 + 4) + 8 * 1024


def test_compiled_blocks_make_the_denoise_no_bound(ti2v_root):
    """torch.compile fuses the blocks' elementwise ops: their eager count may exceed the run's, so
    the surely-held peak is that of the other stages."""
    plan = cuda_plan("ti2v-5B", ti2v_root, t5_cpu=True)
    spec = task_spec("ti2v-5B")
    video = VideoShape(64, 64, 9, False, 5.0)
    eager, compiled = (estimate_memory(plan, spec, video, compiled) for compiled in (False, True))
    assert [s.bound for s in eager.stages] == [True, True]
    assert [(s.stage, s.bound) for s in compiled.stages] == [("denoise", False), ("vae_decode", True)]
    assert compiled.peak == eager.peak and compiled.lower_bound == compiled.stages[1].total
    assert eager.describe().startswith("at least ") and eager.lower_bound == eager.peak
    # When the compiled step is the largest, the words say so, and the bound is the other stage's.
    step, decode = StagePeak("denoise", "DiT", 10, 9, bound=False), StagePeak("vae_decode", VAE, 2, 12)
    both = MemoryEstimate(torch.device("cuda"), (step, decode), {})
    assert both.describe().startswith("about (counted eager") and both.busiest_bound == decode
    assert both.lower_bound == 14 < both.peak == 19


def test_the_advice_names_each_tasks_options_and_puts_the_larger_part_first():
    weights = {VAE: (Step("offload_model", True, "models wait"),)}
    names = " (the command line's flags of those names)"
    decode = StagePeak("vae_decode", VAE, 60, 20)
    estimate = MemoryEstimate(torch.device("cuda"), (decode,), weights, vae_tiling=256)
    assert estimate.remedy == ("to fit, try offload_model True (models wait), vae_tiling 128 (smaller "
                               f"tiles), smaller size, fewer frame_num{names}")
    flags = "--offload_model True (models wait), --vae_tiling 128 (smaller tiles), smaller --size, fewer "
    flags += "--frame_num"
    assert estimate.remedy_for(decode, flags=True) == f"to fit, try {flags}"
    decode = StagePeak("vae_decode", VAE, 2, 20)
    s2v = MemoryEstimate(torch.device("cuda"), (decode,), weights, 64, "infer_frames")
    # No tile is smaller than 64 pixels.
    waits = "offload_model True (models wait)"
    assert s2v.remedy == f"to fit, try smaller size, fewer infer_frames, {waits}{names}"
    # The weights' steps are those of the stage's model: none where no step lowers its stage.
    alone = MemoryEstimate(torch.device("cuda"), (StagePeak("vae_decode", VAE, 2, 20, own=2),), {VAE: ()}, 64)
    assert alone.remedy == f"to fit, try smaller size, fewer frame_num{names}"
    dits_stay = MemoryEstimate(torch.device("cuda"), (StagePeak("vae_encode", VAE, 30, 20, own=2),), weights)
    assert dits_stay.remedy.startswith("to fit, try offload_model True")


def test_fused_attention_lays_its_output_out_as_the_query():
    """CUDA's fused kernels give the output the query's strides: tokens-first storage when the
    query is a transposed [B, L, H, D], so the transpose back and the flatten are views."""
    q = torch.zeros(1, 300, 4, 16, device="meta").transpose(1, 2)

    def run():
        out = F.scaled_dot_product_attention(q, q, q)
        out.transpose(1, 2).flatten(2)

    with FusedAttention():
        assert F.scaled_dot_product_attention(query=q, key=q, value=q).stride() == q.stride()
    assert peak_bytes(run) == 300 * 4 * 16 * 4 + 4 * 300 * 4 + 512 - (4 * 300 * 4) % 512


def test_the_speech_encoder_is_counted_in_inference_mode(s2v_root):
    """A training-mode wav2vec2 masks time steps, which fails on speech too short to mask."""
    plan = float32_plan("s2v-14B", s2v_root)
    assert not plan.meta_models[AUDIO_ENCODER].training
    assert peak_bytes(speech_work, plan.meta_models[AUDIO_ENCODER], 400) > 0


class _StagePeaks(LiveBytes):
    """``LiveBytes`` that also keeps the most bytes alive in each stage of a run (``StageClock``'s),
    the tensors carried into it included."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: dict[str, int] = {}


def run_stage_peaks(pipeline, monkeypatch, **arguments) -> dict[str, int]:
    """The most bytes the tiny ``pipeline``'s ``generate`` holds in each stage, on the CPU."""
    from contextlib import contextmanager

    from wan_runtime.pipelines.report import StageClock

    counter, stage_of_clock = _StagePeaks(), StageClock.stage

    @contextmanager
    def stage(clock, name):
        outer, counter.peak = counter.peak, counter.live
        try:
            with stage_of_clock(clock, name):
                yield
        finally:
            counter.stages[name] = max(counter.stages.get(name, 0), counter.peak)
            counter.peak = max(outer, counter.peak)

    monkeypatch.setattr(StageClock, "stage", stage)
    with counter:
        pipeline.generate("a cat", progress=False, sampling_steps=2, seed=1, **arguments)
    return counter.stages


IMAGE = (96, 64)
RUNS = [
    ("ti2v", {"size": "256*128", "frame_num": 9}),
    ("ti2v", {"size": "256*128", "frame_num": 9, "image": IMAGE}),
    ("ti2v", {"size": "256*128", "frame_num": 9, "guide_scale": 1.0, "vae_tiling": 128}),
    ("i2v", {"size": "128*96", "frame_num": 9, "image": IMAGE, "guide_scale": (1.0, 3.5)}),
    ("s2v", {"image": IMAGE, "infer_frames": 16, "size": "192*128", "num_clip": 1}),
    ("s2v", {"image": IMAGE, "infer_frames": 16, "size": "192*128"}),
    ("s2v", {"image": IMAGE, "infer_frames": 16, "size": "192*128", "start_from_ref": True, "num_clip": 1}),
    ("ti2v", {"size": "256*128", "frame_num": 9, "image": IMAGE, "cache": BOTH_CACHES}),
    ("i2v", {"size": "128*96", "frame_num": 9, "image": IMAGE, "cache": CacheConfig(teacache=True)}),
    ("s2v", {"image": IMAGE, "infer_frames": 16, "size": "192*128", "cache": CacheConfig(fbcache=True)}),
]


@pytest.mark.parametrize(("task", "arguments"), RUNS)
def test_each_stages_estimate_is_at_most_what_the_run_holds_in_it(task, arguments, request, monkeypatch):
    """The tiny pipelines' runs on the CPU, counted stage by stage: each stage's estimate is at
    most what the run holds then (the run also holds what earlier stages hand on)."""
    import numpy as np
    from PIL import Image

    pipeline = request.getfixturevalue(f"{task}_pipeline")
    arguments = dict(arguments)
    if "image" in arguments:
        arguments["image"] = Image.new("RGB", arguments["image"], (120, 30, 200))
    if task == "s2v":
        arguments["audio"] = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
    estimate = pipeline.estimate_memory(**arguments)
    run = run_stage_peaks(pipeline, monkeypatch, **arguments)
    # On a GPU the speech's samples are copied to the device, which on the CPU they need not be.
    copied = {"audio_encode": arguments["audio"].nbytes if task == "s2v" else 0}
    for stage in estimate.stages:
        assert stage.activations <= run[stage.stage] + copied.get(stage.stage, 0), stage
    denoise = max(s.activations for s in estimate.stages if s.stage == "denoise")
    assert denoise > run["denoise"] / 3  # the step's own tensors make most of the stage
    if "cache" in arguments:
        uncached = pipeline.estimate_memory(**{**arguments, "cache": None})
        assert denoise > max(s.activations for s in uncached.stages if s.stage == "denoise")


def test_under_torchrun_the_advice_splits_the_tokens_where_they_are_not(ti2v_root):
    spec, video = task_spec("ti2v-5B"), VideoShape(1280, 704, 9, False, 5.0)
    split = "--ulysses_size 2 (each GPU computes a slice of the tokens)"

    def advice(estimate: MemoryEstimate, stage: str) -> str:
        return estimate.remedy_for(next(s for s in estimate.stages if s.stage == stage), flags=True)

    several = cuda_plan("ti2v-5B", ti2v_root, world=2)
    assert split in advice(estimate_memory(several, spec, video), "denoise")
    assert split not in advice(estimate_memory(several, spec, video), "vae_decode")
    assert split not in advice(estimate_memory(several, spec, video, ulysses=2), "denoise")
    assert split not in advice(estimate_memory(cuda_plan("ti2v-5B", ti2v_root), spec, video), "denoise")
    with pytest.raises(ValueError, match="ulysses 2: the tokens split over 1 or all 1 processes of the plan"):
        estimate_memory(cuda_plan("ti2v-5B", ti2v_root), spec, video, ulysses=2)


def test_a_graphed_steps_advice_drops_the_graphs_copies_and_blocks_stream_after(i2v_root):
    plan = cuda_plan("i2v-A14B", i2v_root)
    estimate = estimate_memory(plan, task_spec("i2v-A14B"), VideoShape(96, 64, 9, True, (3.5, 3.5)),
                               cuda_graphs=True)
    step = next(stage for stage in estimate.stages if stage.stage == "denoise")
    for advice in (estimate.remedy_for(step), estimate.placed(plan).remedy_for(step)):
        assert ("no cuda_graphs (the DiT blocks' graphs keep copies of their input and output), then "
                "stream_blocks N") in advice
        assert advice.count("stream_blocks") == advice.count("cuda_graphs") == 1
    eager = estimate_memory(plan, task_spec("i2v-A14B"), VideoShape(96, 64, 9, True, (3.5, 3.5)))
    assert "stream_blocks" in eager.remedy_for(step) and "cuda_graphs" not in eager.remedy_for(step)
