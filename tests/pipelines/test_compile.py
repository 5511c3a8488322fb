"""``compile=True``: the DiT blocks under ``torch.compile`` (Inductor's C++ code on the CPU) give the
eager pipelines' videos, trace without graph breaks, and compile once per kind of input, not per
step, branch, expert or video size, past Dynamo's default limit of graphs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config

from tests.pipelines.images import gradient_image
from tests.pipelines.poison import poison
from tests.tolerances import COMPILED_VS_EAGER_FP32, rel_l2
from wan_runtime.cache import CacheConfig
from wan_runtime.errors import InputError, NumericalError
from wan_runtime.models.compilation import check_compile_support, check_fp8_compile_support, compile_blocks
from wan_runtime.pipelines import load_pipeline
from wan_runtime.tiny_checkpoints.dit import TINY_TI2V, random_dit

RUN = {"frame_num": 5, "sampling_steps": 4, "shift": 3.0, "seed": 3, "progress": False}
S2V_RUN = {"infer_frames": 4, "size": "64*64", "sampling_steps": 2, "seed": 11, "num_clip": 2,
           "progress": False}
THRESHOLD_ZERO = CacheConfig(teacache=True, teacache_thresh=0.0, fbcache=True, fb_thresh=0.0)


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _breaks() -> int:
    return sum(counters["graph_break"].values())


@pytest.fixture
def fresh_dynamo():
    """Dynamo's code caches and automatic-dynamic memory emptied, so graph counts start at zero;
    no graph break in the test."""
    torch._dynamo.reset()
    breaks = _breaks()
    yield
    torch._dynamo.reset()
    assert _breaks() == breaks


def test_every_kind_of_input_compiles_past_dynamos_default_limit(fresh_dynamo):
    """bfloat16 (block 0's compute-dtype input beside the float32 stream: two graphs), float32 and
    fully converted bfloat16 parameters, per-token and per-sample timesteps, three sizes: 12 graphs,
    where Dynamo's default limit of 8 would leave the last two models running eagerly."""
    base = random_dit(TINY_TI2V).eval()
    models = [compile_blocks(copy.deepcopy(base).set_compute_dtype(torch.bfloat16)),
              compile_blocks(copy.deepcopy(base)),
              compile_blocks(copy.deepcopy(base).set_compute_dtype(torch.bfloat16, keep_float32=False))]
    c = base.config
    start = _graphs()
    with torch.no_grad():
        for model in models:
            for per_token in (True, False):
                for side in (4, 6, 8):
                    t = torch.full((1, side * side // 4), 500.0) if per_token else torch.tensor([500.0])
                    model(torch.randn(1, c.in_dim, 1, side, side), t, torch.randn(1, 5, c.text_dim))
    assert _graphs() - start == 12


def test_compiled_bfloat16_is_as_close_to_float32_as_eager(fresh_dynamo):
    base = random_dit(TINY_TI2V).eval()
    eager = copy.deepcopy(base).set_compute_dtype(torch.bfloat16)
    compiled = compile_blocks(copy.deepcopy(eager))
    c = base.config
    args = (torch.randn(1, c.in_dim, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 5, c.text_dim))
    with torch.no_grad():
        truth, eager_out, compiled_out = base(*args), eager(*args), compiled(*args)
    # Inductor rounds fused intermediates differently; bfloat16's own error (~4e-3 here) dominates.
    assert rel_l2(compiled_out, truth) < 1.25 * rel_l2(eager_out, truth)


def test_i2v_compiles_once_for_both_experts_branches_and_every_size(i2v_root, i2v_pipeline, fresh_dynamo):
    compiled = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32, compile=True)
    image = gradient_image(80, 60)
    start = _graphs()
    video = compiled.generate("a cat", image=image, size="64*64", **RUN)
    # One graph serves 4 steps x 2 CFG branches x 2 experts x every block.
    assert _graphs() - start == 1
    eager = i2v_pipeline.generate("a cat", image=image, size="64*64", **RUN)
    assert rel_l2(video, eager) < COMPILED_VS_EAGER_FP32

    compiled.generate("a cat", image=image, size="64*64", **RUN)
    assert _graphs() - start == 1
    # A second size compiles a graph with a symbolic token count, which a third size reuses.
    compiled.generate("a cat", image=image, size="96*96", **RUN)
    assert _graphs() - start == 2
    video = compiled.generate("a cat", image=image, size="128*96", **RUN)
    assert _graphs() - start == 2
    eager = i2v_pipeline.generate("a cat", image=image, size="128*96", **RUN)
    assert rel_l2(video, eager) < COMPILED_VS_EAGER_FP32


def test_ti2v_compiled_matches_eager_and_the_cache_stays_exact(ti2v_root, ti2v_pipeline, fresh_dynamo):
    compiled = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32, compile=True)
    image = gradient_image(80, 60)
    start = _graphs()
    video = compiled.generate("a cat", image=image, size="64*64", **RUN)
    eager = ti2v_pipeline.generate("a cat", image=image, size="64*64", **RUN)
    assert rel_l2(video, eager) < COMPILED_VS_EAGER_FP32
    # The cache splits the blocks into block 0 and the rest; at threshold 0 it runs the same code.
    cached = compiled.generate("a cat", image=image, size="64*64", cache=THRESHOLD_ZERO, **RUN)
    assert torch.equal(cached, video)
    assert _graphs() - start == 1


def test_ti2v_with_float8_weights_compiles_without_graph_breaks(ti2v_root, fresh_dynamo):
    options = {"device": "cpu", "dtype": torch.float32, "dit_fp8": True}
    compiled = load_pipeline("ti2v-5B", ti2v_root, compile=True, **options)
    start = _graphs()
    video = compiled.generate("a cat", size="64*64", **RUN)
    eager = load_pipeline("ti2v-5B", ti2v_root, **options).generate("a cat", size="64*64", **RUN)
    assert rel_l2(video, eager) < COMPILED_VS_EAGER_FP32
    assert _graphs() - start == 1


def test_numerical_failure_of_a_compiled_run_suggests_running_without_compile(ti2v_root, monkeypatch):
    compiled = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32, compile=True)
    [dit] = compiled.dits.values()
    poison(dit, monkeypatch, from_call=2)
    with pytest.raises(NumericalError, match="at sampling step 2 of 4 .*run again .*without compile"):
        compiled.generate("a cat", size="64*64", **RUN)


def test_s2v_compiled_matches_eager(s2v_root, fresh_dynamo):
    eager, compiled = (load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32, compile=flag)
                       for flag in (False, True))
    portrait = gradient_image(72, 56)
    speech = (0.3 * np.sin(np.arange(8000) / 9)).astype(np.float32)
    videos = []
    start = _graphs()
    for pipeline in (eager, compiled):
        pipeline.motion_frames = (9, 3)  # the tiny motion context of tests/pipelines/test_s2v.py
        videos.append(pipeline.generate("a woman speaks", image=portrait, audio=speech, **S2V_RUN))
    assert rel_l2(videos[1], videos[0]) < COMPILED_VS_EAGER_FP32
    # The first clip leaves the motion tokens out: the second clip's token count is a second size.
    assert _graphs() - start == 2


def test_compile_must_be_a_bool(ti2v_root):
    with pytest.raises(InputError, match="compile must be True or False, got 'yes'"):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", compile="yes")


def test_cpu_compile_without_a_cxx_compiler_is_refused_before_loading(ti2v_root):
    no_compiler = inductor_config.patch({"cpp.cxx": ("no-such-c++-compiler",)})
    message = "compile on the CPU needs a C\\+\\+ compiler .*run without compile"
    with no_compiler, pytest.raises(InputError, match=message):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", compile=True)


def test_cuda_compile_without_triton_is_refused(monkeypatch):
    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: False)
    with pytest.raises(InputError, match="compile needs Triton for CUDA"):
        check_compile_support(torch.device("cuda"))


@pytest.mark.parametrize(("capability", "refused"), [((8, 6), True), ((8, 9), False), ((9, 0), False)])
def test_cuda_compile_of_float8_weights_needs_capability_8_9(monkeypatch, capability, refused):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    if refused:
        with pytest.raises(InputError, match="compile with dit_fp8 needs a GPU of compute capability 8.9 or "
                                             "newer .* on this 8.6 GPU; run without one of them"):
            check_fp8_compile_support(torch.device("cuda"))
    else:
        check_fp8_compile_support(torch.device("cuda"))
    check_fp8_compile_support(torch.device("cpu"))


def test_compile_on_another_device_type_is_refused():
    with pytest.raises(InputError, match="compile runs on cuda or cpu devices, not meta"):
        check_compile_support(torch.device("meta"))
