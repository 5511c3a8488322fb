"""The weights' memory plan: each model's bytes as the loaded pipeline holds them, the residency
(offloading, the text encoder on the CPU, streamed blocks) and the refusal of weights that cannot
fit; worked out from headers alone."""

from __future__ import annotations

import pytest
import torch

from tests.cli.helpers import run_module
from wan_runtime.errors import InputError
from wan_runtime.models import WanModel
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.pipelines import check_pipeline, load_pipeline
from wan_runtime.pipelines.memory_plan import (
    AUDIO_ENCODER,
    TEXT_ENCODER,
    VAE,
    WeightPlan,
    dit_bytes,
    module_bytes,
    plan_weights,
)
from wan_runtime.tasks import task_spec

CUDA = torch.device("cuda")  # only a label here: planning touches no device


def loaded_bytes(pipeline, stream_blocks: int) -> dict[str, int]:
    """What each model of a pipeline loaded on the CPU would hold on a GPU."""
    sizes = {VAE: module_bytes(pipeline.vae.model), TEXT_ENCODER: module_bytes(pipeline.text_encoder.model)}
    for name, dit in pipeline.dits.items():
        indices = dit.block_streaming.indices if stream_blocks else []
        streamed = [module_bytes(dit.blocks[i]) for i in indices] or [0]
        label = f"DiT {name}" if len(pipeline.dits) > 1 else "DiT"
        sizes[label] = module_bytes(dit.resident_modules()) + max(streamed)
    if hasattr(pipeline, "audio_encoder"):
        sizes[AUDIO_ENCODER] = module_bytes(pipeline.audio_encoder.model)
    return sizes


def plan(task: str, root, device=CUDA, **options) -> WeightPlan:
    settings = {"dtype": torch.bfloat16, "offload_model": False, "t5_cpu": False,
                "convert_model_dtype": False, "dit_fsdp": False, "t5_fsdp": False, "stream_blocks": 0,
                "dit_fp8": False, **options}
    spec = task_spec(task)
    dit_class = WanModel if spec.audio_dir is None else WanModelS2V
    return plan_weights(spec, root, device, dit_class, world=1, **settings)


@pytest.mark.parametrize(("task", "options"), [
    ("ti2v-5B", {}),
    ("ti2v-5B", {"dtype": torch.float32, "dit_fp8": True}),
    ("i2v-A14B", {"stream_blocks": 2, "dit_fp8": True}),
    ("i2v-A14B", {"convert_model_dtype": True, "stream_blocks": 9}),
    ("s2v-14B", {"dtype": torch.float32}),
    ("s2v-14B", {"dit_fp8": True, "stream_blocks": 1}),
])
def test_each_model_takes_what_the_loaded_pipeline_holds(request, task, options):
    root = request.getfixturevalue(f"{task.split('-')[0]}_root")
    pipeline = load_pipeline(task, root, device="cpu", **{"dtype": torch.bfloat16, **options})
    planned = plan(task, root, **options)
    assert planned.sizes == loaded_bytes(pipeline, options.get("stream_blocks", 0))
    # Without offloading every model is on the device at once.
    assert planned.peak == sum(planned.sizes.values())


def test_offloading_takes_turns_beside_the_vae(i2v_root):
    planned = plan("i2v-A14B", i2v_root, offload_model=True)
    biggest = max((TEXT_ENCODER, "DiT high_noise", "DiT low_noise"), key=planned.sizes.__getitem__)
    assert planned.peak_models == (VAE, biggest)
    assert planned.peak == planned.sizes[VAE] + planned.sizes[biggest]
    on_cpu = plan("i2v-A14B", i2v_root, offload_model=True, t5_cpu=True)
    assert TEXT_ENCODER not in on_cpu.sizes and on_cpu.peak_models[0] == VAE


def test_on_the_cpu_every_model_counts(i2v_root):
    planned = plan("i2v-A14B", i2v_root, torch.device("cpu"), offload_model=True, t5_cpu=True,
                   stream_blocks=2)
    assert planned.sizes == plan("i2v-A14B", i2v_root).sizes
    assert planned.peak == sum(planned.sizes.values())


def test_fsdp_shards_hold_a_share_and_one_gathered_block(ti2v_dit_dir):
    def model():
        return WanModel._meta_model(ti2v_dit_dir)[0]

    whole = dit_bytes(model(), torch.bfloat16, False, False, 0, 1)
    block = module_bytes(model().set_compute_dtype(torch.bfloat16, keep_float32=False).blocks[0])
    assert dit_bytes(model(), torch.bfloat16, False, False, 0, 4) == whole // 4 + block


def test_weights_that_cannot_fit_are_refused_with_what_lowers_them(ti2v_root):
    planned = plan("ti2v-5B", ti2v_root)
    planned.check_fits(planned.peak)
    with pytest.raises(InputError) as error:
        planned.check_fits(planned.peak - 1)
    message = str(error.value)
    assert message.startswith(f"the weights alone would take at most {planned.peak / 1e9:.2f} GB of cuda "
                              "memory at once (VAE ")
    assert "more than the" in message and "(offload_model, t5_cpu, stream_blocks)" in message
    assert message.endswith("store the DiTs in float8 (dit_fp8)")


def test_check_pipeline_returns_the_plan(ti2v_root):
    planned = check_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    assert planned.sizes == plan("ti2v-5B", ti2v_root, torch.device("cpu"), dtype=torch.float32).sizes


def test_dry_run_prints_the_plan(tmp_path, ti2v_root):
    result = run_module("wan_runtime.generate", "--ckpt_dir", str(ti2v_root), "--device", "cpu", "--dry_run",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("memory: ")]
    assert line.startswith("memory: the weights take at most ") and "of cpu memory at once (VAE " in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device memory needs a GPU")
def test_cuda_holds_what_the_plan_says(ti2v_root):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    planned = check_pipeline("ti2v-5B", ti2v_root, device="cuda", offload_model=False)
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cuda", offload_model=False)
    held = torch.cuda.memory_allocated() - before
    assert planned.peak <= held <= planned.peak * 1.01 + 2**20
    del pipeline
