"""Float8 DiT weights (``dit_fp8``): the rounding's bound, and models and pipelines that compute
exactly what the unquantized code computes from weights rounded the same way beforehand."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from benchmarks.release_configs import A14B, TI2V_5B
from tests.lora.lora_writers import parameter_shapes, random_lora, write_official
from tests.models.test_dit_parity import batch_contexts, make_inputs
from tests.pipelines.images import gradient_image
from tests.tolerances import rel_l2
from wan_runtime.errors import InputError
from wan_runtime.lora import LoraFile
from wan_runtime.models import WanModel
from wan_runtime.models.fp8_weights import (
    FP8,
    Fp8Linear,
    dequantize_rows,
    quantize_rows,
    store_linears_in_fp8,
)
from wan_runtime.models.s2v_config import S2VConfig
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.pipelines import check_pipeline, load_pipeline
from wan_runtime.pipelines.memory_plan import module_bytes
from wan_runtime.tiny_checkpoints import TINY_TI2V, random_dit

# The weights of the linear layers stored in float8, in the official names: the blocks' and the
# S2V audio injector's.
FP8_WEIGHT = re.compile(r"blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02])\.weight"
                        r"|audio_injector\.(injector\.\d+\.[qkvo]|injector_adain_layers\.\d+\.linear)\.weight")


def rounded(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as the float8 layer rebuilds it, in float32."""
    return dequantize_rows(*quantize_rows(weight), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 7), (64, 48), (130, 257)])
def test_rounding_error_is_within_half_a_float8_step(dtype, shape):
    """3 mantissa bits: at most 2**-4 of an entry in the normal range, and half the subnormal step
    (2**-10 of the row's scale) below it; each row's largest entry lands on 448."""
    g = torch.Generator().manual_seed(sum(shape))
    weight = (torch.randn(shape, generator=g) * torch.logspace(-3, 2, shape[0])[:, None]).to(dtype)
    values, scale = quantize_rows(weight)
    assert values.dtype == FP8 and scale.dtype == torch.float32 and scale.shape == (shape[0], 1)
    assert torch.equal(values.float().abs().amax(dim=1), torch.full((shape[0],), 448.0))
    wide = weight.float()
    error = (dequantize_rows(values, scale, torch.float32) - wide).abs()
    bound = torch.maximum(wide.abs() * 2**-4, scale * 2**-10) * (1 + 1e-6)
    assert (error <= bound).all()
    assert error.max() > 0, "the test weights must need rounding"


def test_float8_values_survive_exactly():
    """A row of every finite float8 value (±448 among them, so the scale is 1) needs no rounding,
    nor that row times a power of two."""
    grid = torch.arange(256, dtype=torch.uint8).view(FP8).float()
    grid = grid[grid.isfinite()]
    weight = torch.stack([grid, grid * 2**-20, grid * 2**9])
    assert torch.equal(rounded(weight), weight)


def test_zero_and_vanishing_rows_stay_finite():
    """A zero row, and a row so small that its largest entry over 448 underflows (scale 1 there:
    its entries round to zero, as bfloat16 would keep them no better), beside an ordinary one."""
    weight = torch.tensor([[0.0, 0.0, 0.0], [1e-44, 0.0, -5e-45], [0.0, 1.0, 4.0]])
    values, scale = quantize_rows(weight)
    assert scale.flatten().tolist() == [1.0, 1.0, torch.tensor(4.0 / 448).item()]
    assert torch.equal(rounded(weight), torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 4.0]]))


def test_converting_a_layer_keeps_its_float8_weight():
    """``.to(dtype)``, ``.half()``: the bias and the compute dtype follow, the stored weight and
    scales do not (float8 is a floating dtype to torch); the state dict holds the scales."""
    g = torch.Generator().manual_seed(5)
    layer = Fp8Linear(16, 8, True, torch.float32)
    layer.set_weight(torch.randn(8, 16, generator=g), "cpu")
    layer.bias = torch.nn.Parameter(torch.randn(8, generator=g), requires_grad=False)
    values, scale, x = layer.weight.clone(), layer.weight_scale.clone(), torch.randn(2, 16, generator=g)
    for dtype, convert in ((torch.bfloat16, lambda m: m.to(torch.bfloat16)), (torch.float16, Fp8Linear.half),
                           (torch.float32, Fp8Linear.float)):
        convert(layer)
        assert (layer.compute_dtype, layer.bias.dtype, layer.weight.dtype) == (dtype, dtype, FP8)
        assert torch.equal(layer.weight.view(torch.uint8), values.view(torch.uint8))
        assert torch.equal(layer.weight_scale, scale)
        want = F.linear(x.to(dtype), dequantize_rows(values, scale, dtype), layer.bias)
        assert torch.equal(layer(x), want)
    copy = Fp8Linear(16, 8, True, torch.float32)
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy(x), layer(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_computes_with_the_rebuilt_weight(dtype):
    g = torch.Generator().manual_seed(4)
    weight, bias = torch.randn(24, 16, generator=g), torch.randn(24, generator=g)
    x = torch.randn(3, 16, generator=g)
    layer = Fp8Linear(16, 24, True, dtype)
    layer.set_weight(weight, "cpu")
    layer.bias = torch.nn.Parameter(bias.to(dtype), requires_grad=False)
    want = F.linear(x.to(dtype), dequantize_rows(*quantize_rows(weight), dtype), bias.to(dtype))
    assert layer(x).dtype == dtype and torch.equal(layer(x), want)


@pytest.mark.parametrize(("config", "dtype", "most"), [
    (A14B, torch.bfloat16, 14.95e9), (TI2V_5B, torch.bfloat16, 5.25e9), (S2VConfig(), torch.bfloat16, 17.3e9),
    (A14B, torch.float32, 7.6e9 * 2),
])
def test_real_sizes_take_about_half(config, dtype, most):
    """The release architectures on the meta device: weights, biases and scales of the model."""
    model_class = WanModelS2V if isinstance(config, S2VConfig) else WanModel
    with torch.device("meta"):
        model = model_class(config).set_compute_dtype(dtype)

    before = module_bytes(model)
    linears = [store_linears_in_fp8(module) for module in model.fp8_modules()]
    assert linears[0] == 10 * config.num_layers
    assert module_bytes(model) <= most
    assert module_bytes(model) / before < (0.53 if dtype == torch.bfloat16 else 0.27)


def rounded_copy(folder: Path, destination: Path) -> Path:
    """A copy of the official-layout ``folder`` whose DiT block linear weights (in every
    safetensors file under it) hold their float8 rounding."""
    shutil.copytree(folder, destination)
    for path in destination.rglob("*.safetensors"):
        tensors = load_file(path)
        changed = {k: rounded(v).to(v.dtype) for k, v in tensors.items() if FP8_WEIGHT.fullmatch(k)}
        if changed:
            save_file({**tensors, **changed}, path)
    return destination


def forward(model: WanModel, model_type: str) -> torch.Tensor:
    x, t, contexts, y = make_inputs(model_type, seed=5, per_token=model_type == "ti2v")
    with torch.no_grad():
        return model(x, t, batch_contexts(contexts), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fixture", ["i2v_dit_dir", "ti2v_dit_dir"])
def test_dit_computes_what_rounded_weights_compute(request, tmp_path, fixture, dtype):
    folder = request.getfixturevalue(fixture)
    model = WanModel.from_pretrained(folder, dtype=dtype, fp8=True)
    kind = model.config.model_type
    stored = {name: p.dtype for name, p in model.named_parameters()}
    for name, p in WanModel.from_pretrained(folder, dtype=dtype).named_parameters():
        assert stored[name] == (FP8 if FP8_WEIGHT.fullmatch(name) else p.dtype), name
    want = WanModel.from_pretrained(rounded_copy(folder, tmp_path / "rounded"), dtype=dtype)
    assert torch.equal(forward(model, kind), forward(want, kind))
    lossless = forward(WanModel.from_pretrained(folder), kind)
    assert 1e-4 < rel_l2(forward(model, kind), lossless) < 0.03


def test_a_loaded_model_quantizes_as_loading_does(ti2v_dit_dir):
    """``store_weights_in_fp8`` on a float32 model, then its compute dtype set: the model that
    loading with ``fp8`` makes."""
    for dtype in (torch.float32, torch.bfloat16):
        model = WanModel.from_pretrained(ti2v_dit_dir).store_weights_in_fp8().set_compute_dtype(dtype)
        want = WanModel.from_pretrained(ti2v_dit_dir, dtype=dtype, fp8=True)
        assert model.blocks[0].ffn[2].weight.dtype == FP8
        assert torch.equal(forward(model, "ti2v"), forward(want, "ti2v"))


def test_lora_merges_before_the_rounding(tmp_path, ti2v_dit_dir):
    path = write_official(tmp_path / "lora.safetensors", random_lora(parameter_shapes(ti2v_dit_dir), seed=6))
    loras = [(LoraFile.read(path), 0.8)]
    model = WanModel.from_pretrained(ti2v_dit_dir, loras=loras, fp8=True)
    want = WanModel.from_pretrained(ti2v_dit_dir, loras=loras)
    for name, p in want.named_parameters():
        if FP8_WEIGHT.fullmatch(name):
            p.data = rounded(p.data)
    assert torch.equal(forward(model, "ti2v"), forward(want, "ti2v"))


VIDEO = {"size": "64*64", "frame_num": 5, "sampling_steps": 2, "seed": 3}
RUNS = {
    "ti2v-5B": VIDEO,
    "i2v-A14B": {**VIDEO, "image": gradient_image(64, 64)},
    "s2v-14B": {"size": "64*64", "infer_frames": 4, "sampling_steps": 2, "seed": 11, "num_clip": 1,
                "image": gradient_image(72, 56),
                "audio": (0.3 * np.sin(np.arange(8000) / 9)).astype(np.float32)},
}


@pytest.mark.parametrize(("task", "dtype"), [(task, torch.float32) for task in RUNS]
                         + [("ti2v-5B", torch.bfloat16)])
def test_pipelines_make_the_video_of_rounded_weights(request, tmp_path, task, dtype):
    """Every DiT of the task (both i2v-A14B experts; the S2V DiT with its audio injector),
    resident, and offloaded with streamed blocks."""
    root = request.getfixturevalue(f"{task.split('-')[0]}_root")
    want = load_pipeline(task, rounded_copy(root, tmp_path / "rounded"), device="cpu",
                         dtype=dtype).generate("a cat", progress=False, **RUNS[task])
    for options in ({}, {"offload_model": True, "stream_blocks": 2}):
        pipeline = load_pipeline(task, root, device="cpu", dtype=dtype, dit_fp8=True, **options)
        for dit in pipeline.dits.values():
            assert all(isinstance(block.ffn[0], Fp8Linear) for block in dit.blocks)
        assert torch.equal(pipeline.generate("a cat", progress=False, **RUNS[task]), want)


@pytest.mark.parametrize(("options", "fragment"), [
    ({"dit_fp8": 1}, "dit_fp8 must be True or False"),
    ({"dit_fp8": True, "dit_fsdp": True}, "dit_fp8 and dit_fsdp do not combine"),
])
def test_bad_dit_fp8_is_refused_before_loading(ti2v_root, options, fragment):
    with pytest.raises(InputError, match=fragment):
        check_pipeline("ti2v-5B", ti2v_root, device="cpu", **options)
    with pytest.raises(InputError, match=fragment):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", **options)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@CUDA
def test_cuda_quantizes_as_the_cpu_does():
    """Loading quantizes on the GPU (the merge device) what offloading then keeps on the CPU."""
    g = torch.Generator().manual_seed(7)
    weight = torch.randn(300, 200, generator=g) * torch.logspace(-30, 3, 300)[:, None]
    values, scale = quantize_rows(weight)
    on_gpu = quantize_rows(weight.cuda())
    assert torch.equal(on_gpu[0].cpu().view(torch.uint8), values.view(torch.uint8))
    assert torch.equal(on_gpu[1].cpu(), scale)


@CUDA
@pytest.mark.parametrize("options", [{}, {"offload_model": True, "stream_blocks": 2}],
                         ids=["resident", "offloaded-streamed"])
def test_cuda_pipeline_makes_the_video_of_rounded_weights(tmp_path, ti2v_root, options):
    run = {**VIDEO, "progress": False}
    want = load_pipeline("ti2v-5B", rounded_copy(ti2v_root, tmp_path / "rounded"), device="cuda",
                         dtype=torch.bfloat16).generate("a cat", **run)
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cuda", dtype=torch.bfloat16, dit_fp8=True,
                             **options)
    assert torch.equal(pipeline.generate("a cat", **run), want)
    [dit] = pipeline.dits.values()
    place = "cpu" if options else "cuda"
    assert {t.device.type for t in [*dit.parameters(), *dit.buffers()]} == {place}


@CUDA
def test_cuda_holds_about_half_the_bytes():
    config = replace(TINY_TI2V, num_layers=4, dim=1024, ffn_dim=4096, num_heads=8)
    sizes = {}
    for name in ("bf16", "fp8"):
        model = random_dit(config, seed=1)
        if name == "fp8":
            model.store_weights_in_fp8()
        model.set_compute_dtype(torch.bfloat16)
        before = torch.cuda.memory_allocated()
        model.cuda()
        sizes[name] = torch.cuda.memory_allocated() - before
        del model
    assert sizes["fp8"] < 0.56 * sizes["bf16"]
