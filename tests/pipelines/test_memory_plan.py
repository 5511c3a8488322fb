"""The weights' memory plan: each model's bytes as the loaded pipeline holds them, the residency
(offloading, the text encoder on the CPU, streamed blocks) and the refusal of weights that cannot
fit; worked out from headers alone."""

from __future__ import annotations

import dataclasses
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from benchmarks.weight_plans import release_plan
from tests.cli.helpers import run_module
from tests.distributed.dit_inputs import dit_inputs
from tests.distributed.ranks import run_ranks
from tests.pipelines.allocations import allocated_peak
from wan_runtime.errors import InputError
from wan_runtime.models import WanModel
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.pipelines import Pipeline, check_pipeline, load_pipeline
from wan_runtime.pipelines.memory_plan import (
    AUDIO_ENCODER,
    TEXT_ENCODER,
    VAE,
    Footprint,
    WeightPlan,
    dit_footprint,
    is_dit,
    module_bytes,
    parameter_bytes,
    plan_weights,
    prepare_dit,
    shard_bytes,
)
from wan_runtime.tasks import task_spec
from wan_runtime.tiny_checkpoints import TINY_TI2V, write_dit

CUDA = torch.device("cuda")  # only a label here: planning touches no device


def loaded_footprints(pipeline, stream_blocks: int) -> dict[str, Footprint]:
    """What each model of a pipeline loaded on the CPU would hold on a GPU."""
    models = {VAE: Footprint(module_bytes(pipeline.vae.model)),
              TEXT_ENCODER: Footprint(module_bytes(pipeline.text_encoder.model))}
    for name, dit in pipeline.dits.items():
        indices = dit.block_streaming.indices if stream_blocks else []
        streamed = [module_bytes(dit.blocks[i]) for i in indices] or [0]
        label = f"DiT {name}" if len(pipeline.dits) > 1 else "DiT"
        models[label] = Footprint(module_bytes(dit.resident_modules()), max(streamed))
    if hasattr(pipeline, "audio_encoder"):
        models[AUDIO_ENCODER] = Footprint(module_bytes(pipeline.audio_encoder.model))
    return models


def plan(task: str, root, device=CUDA, world: int = 1, **options) -> WeightPlan:
    settings = {"dtype": torch.bfloat16, "offload_model": False, "t5_cpu": False,
                "convert_model_dtype": False, "dit_fsdp": False, "t5_fsdp": False, "stream_blocks": 0,
                "dit_fp8": False, **options}
    spec = task_spec(task)
    dit_class = WanModel if spec.audio_dir is None else WanModelS2V
    return plan_weights(spec, root, device, dit_class, world=world, **settings)


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
    assert planned.models == loaded_footprints(pipeline, options.get("stream_blocks", 0))
    # Without offloading every model stays on the device, and one at a time works.
    resident = sum(f.resident for f in planned.models.values())
    assert planned.peak == resident + max(f.extra for f in planned.models.values())


def test_offloading_takes_turns_beside_the_vae(i2v_root):
    planned = plan("i2v-A14B", i2v_root, offload_model=True, stream_blocks=1)
    names = (TEXT_ENCODER, "DiT high_noise", "DiT low_noise")
    working = {name: planned.models[name].working for name in names}
    busiest = max(working, key=working.__getitem__)
    assert planned.busiest == busiest
    assert planned.peak == planned.models[VAE].resident + working[busiest]
    on_cpu = plan("i2v-A14B", i2v_root, offload_model=True, t5_cpu=True)
    assert TEXT_ENCODER not in on_cpu.models and on_cpu.busiest.startswith("DiT")


def test_a_text_encoder_kept_on_the_cpu_is_not_read(ti2v_root, monkeypatch):
    monkeypatch.setattr("wan_runtime.pipelines.memory_plan.read_checkpoint", None)
    assert TEXT_ENCODER not in plan("ti2v-5B", ti2v_root, t5_cpu=True).models


def test_on_the_cpu_every_model_counts(i2v_root):
    planned = plan("i2v-A14B", i2v_root, torch.device("cpu"), offload_model=True, t5_cpu=True,
                   stream_blocks=2)
    assert planned.models == plan("i2v-A14B", i2v_root).models
    assert planned.peak == sum(f.resident for f in planned.models.values())


def _local_shard_bytes(rank: int, folder, planned: int) -> None:
    model = WanModel.from_pretrained(folder, dtype=torch.bfloat16, convert_model_dtype=True).enable_fsdp(
        torch.device("cpu"))
    local = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    # Rank 0 holds the largest share; the last the smallest.
    assert local == planned if rank == 0 else local <= planned, (rank, local, planned)


def test_fsdp_shares_are_what_each_process_holds(ti2v_dit_dir):
    def footprint(world: int) -> Footprint:
        model = prepare_dit(WanModel._meta_model(ti2v_dit_dir)[0], torch.bfloat16, False, False)
        return dit_footprint(model, 0, world)

    meta = WanModel._meta_model(ti2v_dit_dir)[0].set_compute_dtype(torch.bfloat16, keep_float32=False)
    whole = module_bytes(meta)
    share = shard_bytes(meta, 2)
    assert whole // 2 <= share <= whole // 2 * 1.01
    # The rest is gathered while the DiT works (the next test).
    assert footprint(2).resident == share
    run_ranks(_local_shard_bytes, 2, ti2v_dit_dir, share)


def _staged(dit, inputs: tuple) -> None:
    """A DiT forward as the step cache runs it: stage by stage."""
    tokens, cond = dit.prepare(*inputs)
    dit.finish(dit.run_blocks(tokens, cond), cond)


def _gathered_peaks(rank: int, root, dit_folder, planned: dict[str, tuple[int, int]]) -> None:
    whole = load_pipeline("ti2v-5B", root, device="cpu", convert_model_dtype=True)
    several = load_pipeline("ti2v-5B", root, device="cpu", dit_fsdp=True, t5_fsdp=True)
    dits = [WanModel.from_pretrained(dit_folder, dtype=torch.bfloat16, convert_model_dtype=True,
                                     fsdp_device=fsdp) for fsdp in (None, torch.device("cpu"))]
    inputs = dit_inputs(TINY_TI2V, (3, 6, 10), True)
    # Each run: the model of the unsharded and of the sharded run, and its work.
    encoders = [p.text_encoder for p in (whole, several)]
    runs = {TEXT_ENCODER: [(encoder.model, partial(encoder.encode, ["a cat"])) for encoder in encoders],
            "DiT": [(dit, partial(dit, *inputs)) for dit in dits],
            "DiT, stage by stage": [(dit, partial(_staged, dit, inputs)) for dit in dits]}
    with torch.inference_mode():
        for label, both in runs.items():
            peaks = []
            for model, run in both:
                peaks.append(allocated_peak(run))
                Pipeline._release_gathered(model)
            activations, peak = peaks
            most, computing = planned[label.split(",")[0]]
            # The gathered weights at their most are reached, and with the activations cover the
            # peak; the least FSDP keeps gathered while the model works, with the activations'
            # peak, is reached too.
            assert most <= peak <= most + activations, (label, peak, activations, most)
            assert computing + activations <= peak, (label, peak, activations, computing)


def test_what_fsdp_gathers_while_a_model_works_is_planned(ti2v_root, tmp_path):
    """The text encoder and the DiT (called whole, or stage by stage as the step cache runs it),
    measured in the first process: the plan's gathered weights, above its share. The DiT reads
    a short text, so that its activations, which the bounds allow for, are few."""
    dit_folder = write_dit(tmp_path / "dit", dataclasses.replace(TINY_TI2V, text_len=8), seed=2)
    planned = plan("ti2v-5B", ti2v_root, world=2, dit_fsdp=True, t5_fsdp=True)
    meta_dit = prepare_dit(WanModel._meta_model(dit_folder)[0], torch.bfloat16, False, False)
    models = {TEXT_ENCODER: (planned.meta_models[TEXT_ENCODER], planned.models[TEXT_ENCODER]),
              "DiT": (meta_dit, dit_footprint(meta_dit, 0, 2))}
    gathered = {}
    for label, (meta, footprint) in models.items():
        assert footprint.resident == shard_bytes(meta, 2) + module_bytes(meta) - parameter_bytes(meta)
        gathered[label] = (footprint.extra, footprint.computing)
    run_ranks(_gathered_peaks, 2, ti2v_root, str(dit_folder), gathered)


def test_weights_that_cannot_fit_are_refused_with_what_lowers_them(ti2v_root):
    planned = plan("ti2v-5B", ti2v_root, dtype=torch.float32, stream_blocks=1)
    planned.check_fits(planned.peak)
    with pytest.raises(InputError) as error:
        planned.check_fits(planned.peak - 1)
    message = str(error.value)
    assert message.startswith(f"the weights alone would take at most {planned.peak / 2**30:.2f} GiB of cuda "
                              "memory at once (VAE ")
    capacity = f"{(planned.peak - 1) / 2**30:.2f} GiB"
    assert f": more than the {capacity} it has; to fit, try offload_model True (" in message
    assert "dit_fp8 (" in message and "dtype bfloat16" in message
    # The tiny DiT's one block but the first streams already.
    assert planned.most_streamed == 1 and "stream_blocks" not in message
    assert message.endswith("(the command line's flags of those names)")
    done = plan("ti2v-5B", ti2v_root, offload_model=True, t5_cpu=True, dit_fp8=True)
    with pytest.raises(InputError) as error:
        done.check_fits(0)
    assert str(error.value).endswith("to fit, try stream_blocks N (DiT blocks wait in CPU memory until they "
                                     "run) (the command line's flags of those names)")
    streaming = done.placed(offload_model=True, t5_cpu=True, stream_blocks=1)
    assert streaming.remedy == "no option lowers them further"


@pytest.mark.parametrize(("task", "flags"), [
    ("ti2v-5B", {}), ("ti2v-5B", {"dit_fp8": True}), ("ti2v-5B", {"stream_blocks": 29}),
    ("i2v-A14B", {}), ("s2v-14B", {}),
])
def test_the_remedy_lowers_the_model_whose_turn_makes_the_peak(task, flags):
    """Under offload_model the peak is one model's turn beside the VAE (the release's: ti2v-5B's
    text encoder, the 14B tasks' DiTs): what lowers another model's weights leaves it as it is."""
    planned = release_plan(task, **flags)
    if is_dit(planned.busiest):
        assert planned.remedy.startswith("to fit, try stream_blocks N (") and "t5_cpu" not in planned.remedy
    else:
        assert planned.busiest == TEXT_ENCODER
        assert planned.remedy.startswith("to fit, try t5_cpu (")
        assert "stream_blocks" not in planned.remedy and "dit_fp8" not in planned.remedy
    # Each step given lowers the peak.
    for step in planned.remedy_steps:
        if step.option in ("t5_cpu", "stream_blocks"):
            value = {"t5_cpu": True, "stream_blocks": planned.most_streamed}[step.option]
            o = planned.options
            placement = {"offload_model": o.offload_model, "t5_cpu": o.t5_cpu,
                         "stream_blocks": o.stream_blocks, step.option: value}
            assert planned.placed(**placement).peak < planned.peak


def test_check_pipeline_returns_the_plan_the_loaded_pipeline_keeps(ti2v_root):
    planned = check_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    assert planned.models == plan("ti2v-5B", ti2v_root, torch.device("cpu"), dtype=torch.float32).models
    loaded = load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    assert loaded.weight_plan.models == planned.models


def test_load_on_a_gpu_too_small_for_the_weights_refuses_before_loading(ti2v_root, monkeypatch):
    monkeypatch.setattr("wan_runtime.pipelines.loading._resolve_device", lambda device: CUDA)
    small = SimpleNamespace(total_memory=10**6)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: small)
    monkeypatch.setattr("wan_runtime.pipelines.loading.load_text_encoder", None)  # nothing may load
    with pytest.raises(InputError, match=r"the weights alone would take .* more than the 0.00 GiB it has"):
        load_pipeline("ti2v-5B", ti2v_root, device="cuda")


def test_dry_run_prints_the_plan(tmp_path, ti2v_root):
    """On the CPU the weights' one memory is the CPU's (``host_memory``), with what is free."""
    result = run_module("wan_runtime.generate", "--ckpt_dir", str(ti2v_root), "--device", "cpu", "--dry_run",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("memory: ")]
    assert line.startswith("memory: the weights take at most ") and "of CPU memory at once (VAE " in line
    assert "; the machine has " in line and "GiB of RAM free (" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device memory needs a GPU")
def test_cuda_holds_what_the_plan_says(ti2v_root):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    planned = check_pipeline("ti2v-5B", ti2v_root, device="cuda", offload_model=False)
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cuda", offload_model=False)
    held = torch.cuda.memory_allocated() - before
    assert planned.peak <= held <= planned.peak * 1.01 + 2**20
    del pipeline


@pytest.mark.parametrize("task", ["i2v-A14B", "s2v-14B"])
@pytest.mark.parametrize(("offload_model", "t5_cpu", "stream_blocks"), [
    (False, False, 0), (True, False, 1), (False, True, 1), (True, True, 0),
])
def test_a_plan_placed_otherwise_is_the_plan_of_those_options(request, task, offload_model, t5_cpu,
                                                              stream_blocks):
    root = request.getfixturevalue(f"{task.split('-')[0]}_root")
    options = {"dtype": torch.bfloat16, "dit_fp8": True}
    placed = plan(task, root, **options).placed(offload_model, t5_cpu, stream_blocks)
    direct = plan(task, root, offload_model=offload_model, t5_cpu=t5_cpu, stream_blocks=stream_blocks,
                  **options)
    assert (placed.models, placed.moving, placed.options) == (direct.models, direct.moving, direct.options)
    assert placed.remedy == direct.remedy


def test_a_text_encoder_not_read_cannot_be_placed(ti2v_root):
    without = plan("ti2v-5B", ti2v_root, t5_cpu=True)
    with pytest.raises(ValueError, match="made without the text encoder"):
        without.placed(offload_model=True, t5_cpu=False, stream_blocks=0)
    assert without.placed(offload_model=True, t5_cpu=True, stream_blocks=1).models["DiT"].extra > 0


def test_on_the_cpu_no_step_moves_a_model_to_cpu_memory(ti2v_root):
    """Every model is in CPU memory there already: streaming or offloading would lower nothing."""
    plan = check_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float32)
    for name in plan.models:
        options = {step.option for step in plan.steps_while(name)}
        assert not options & {"offload_model", "t5_cpu", "stream_blocks"}, (name, options)
    assert "dtype bfloat16" in plan.remedy
