"""The weights' CPU memory: what each placement keeps there (the bytes of the loaded pipelines,
the streamed blocks' real buffers), the free memory read from Linux and cgroup files, and the
refusal, before loading, of weights that would not fit it."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.pipelines.test_memory_fit import I2V, _base, _estimates, _most_needed
from tests.pipelines.test_memory_plan import plan
from wan_runtime.errors import InputError
from wan_runtime.models.pinned_chunks import chunk_bytes
from wan_runtime.pipelines import check_pipeline, load_pipeline
from wan_runtime.pipelines.host_memory import (
    ENV_VAR,
    FreeMemory,
    check_host_memory,
    free_memory,
    free_to_check,
    host_plan,
    host_remedy,
    local_processes,
)
from wan_runtime.pipelines.memory_fit import NoFit, fit_placement
from wan_runtime.pipelines.memory_plan import AUDIO_ENCODER, TEXT_ENCODER, VAE, module_bytes, streamed_blocks
from wan_runtime.tiny_checkpoints import TINY_TI2V, write_dit, write_task_checkpoint

GIB = 2**30
KIB = 1024


def loaded_host(pipeline, offload_model: bool, t5_cpu: bool) -> tuple[dict[str, int], int]:
    """What ``pipeline``, loaded on the CPU with these options, would keep in CPU memory on a GPU:
    the bytes of the models waiting there, and of the buffers its streamed blocks would move into
    (on a GPU; ``test_pinned_chunks`` checks those buffers)."""
    encoder = pipeline.text_encoder.model
    copied = next(encoder.parameters()).dtype != torch.bfloat16  # bfloat16 reads the mapped file
    waits = t5_cpu or offload_model  # offloaded, it keeps its CPU tensors: the file's, unless converted
    models = {TEXT_ENCODER: module_bytes(encoder) if waits and copied else 0, VAE: 0}
    pinned = 0
    for name, dit in pipeline.dits.items():
        label = f"DiT {name}" if len(pipeline.dits) > 1 else "DiT"
        models[label] = module_bytes(dit.resident_modules()) if offload_model else 0
        streamed = [] if dit.block_streaming is None else [dit.blocks[i] for i in dit.block_streaming.indices]
        pinned += chunk_bytes([t for block in streamed for t in [*block.parameters(), *block.buffers()]])
    if hasattr(pipeline, "audio_encoder"):
        models[AUDIO_ENCODER] = module_bytes(pipeline.audio_encoder.model) if offload_model else 0
    return models, pinned


@pytest.mark.parametrize(("task", "options"), [
    ("ti2v-5B", {"offload_model": True}),
    ("ti2v-5B", {"t5_cpu": True, "dtype": torch.float32, "stream_blocks": 2}),
    ("i2v-A14B", {"offload_model": True, "stream_blocks": 1, "dit_fp8": True}),
    ("i2v-A14B", {"t5_cpu": True, "stream_blocks": 9}),
    ("i2v-A14B", {"offload_model": True, "dtype": torch.float32}),
    ("s2v-14B", {"offload_model": True, "t5_cpu": True}),
    ("s2v-14B", {"stream_blocks": 3, "dit_fp8": True}),
])
def test_each_model_keeps_in_cpu_memory_what_the_loaded_pipeline_does(request, task, options):
    root = request.getfixturevalue(f"{task.split('-')[0]}_root")
    offload_model, t5_cpu = options.get("offload_model", False), options.get("t5_cpu", False)
    pipeline = load_pipeline(task, root, device="cpu", **{"dtype": torch.bfloat16, **options})
    planned = host_plan(plan(task, root, **options))
    models, pinned = loaded_host(pipeline, offload_model, t5_cpu)
    assert {n: b for n, b in planned.models.items() if b} == {n: b for n, b in models.items() if b}
    assert planned.pinned == pinned and (pinned > 0) == bool(options.get("stream_blocks"))
    assert planned.peak >= planned.settled == sum(models.values()) + pinned


def test_a_bfloat16_text_encoder_on_the_cpu_reads_its_mapped_file(ti2v_root):
    """Not counted because its weights are the file's pages, which the kernel can drop."""
    pipeline = load_pipeline("ti2v-5B", ti2v_root, device="cpu", t5_cpu=True)
    t5_file = str((ti2v_root / "models_t5_umt5-xxl-enc-bf16.pth").resolve())
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(t5_file):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((start, end))
    weights = list(pipeline.text_encoder.model.parameters())
    assert spans and all(any(s <= w.data_ptr() < e for s, e in spans) for w in weights)
    assert host_plan(plan("ti2v-5B", ti2v_root, device=torch.device("cpu"))).models[TEXT_ENCODER] == 0


def test_on_the_cpu_every_model_but_the_mapped_text_encoder_counts(s2v_root):
    planned = plan("s2v-14B", s2v_root, device=torch.device("cpu"), stream_blocks=2)
    host = host_plan(planned)
    assert host.pinned == 0 and host.models[TEXT_ENCODER] == 0
    assert host.settled == sum(module_bytes(m) for n, m in planned.meta_models.items() if n != TEXT_ENCODER)


def test_a_streamed_dit_loads_its_streamed_blocks_alone_through_cpu_memory(i2v_root):
    planned = plan("i2v-A14B", i2v_root, stream_blocks=1)
    host = host_plan(planned)
    assert host.models == {TEXT_ENCODER: 0, VAE: 0, "DiT high_noise": 0, "DiT low_noise": 0}
    low = planned.meta_models["DiT low_noise"]
    block = module_bytes(streamed_blocks(low, 1)[0])
    # The low-noise expert's streamed block loads beside both experts' buffers at most.
    assert host.settled + block >= host.loading > host.settled + block - host.pinned // 2
    assert host.peak == host.loading and "while a model loads through it" in host.describe()
    # Offloaded, the whole expert loads there, beside the other one, before its blocks move into
    # their buffers.
    offloaded = host_plan(plan("i2v-A14B", i2v_root, offload_model=True, stream_blocks=1))
    assert host.loading < module_bytes(low) < offloaded.loading - offloaded.models["DiT high_noise"]
    assert host_plan(plan("i2v-A14B", i2v_root)).describe() == "no CPU memory"


def _root_with(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


MEMINFO = "MemTotal: 65000000 kB\nMemAvailable:   50000000 kB\nSwapTotal: 8000000 kB\nSwapFree: 4000000 kB\n"


def test_free_memory_is_memavailable_and_free_swap(tmp_path):
    root = _root_with(tmp_path, {"proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/\n"})
    assert free_memory(root) == FreeMemory(50000000 * KIB, 4000000 * KIB, "MemAvailable")
    assert free_memory(tmp_path / "nothing") is None


def test_a_cgroup_v2_limit_over_the_process_or_its_parents_bounds_it(tmp_path):
    files = {"proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/jobs/mine\n",
             "sys/fs/cgroup/jobs/mine/memory.max": "max\n", "sys/fs/cgroup/jobs/mine/memory.current": "5\n",
             "sys/fs/cgroup/jobs/memory.max": f"{20 * GIB}\n",
             "sys/fs/cgroup/jobs/memory.current": f"{6 * GIB}\n",
             "sys/fs/cgroup/jobs/memory.stat": f"anon 1\ninactive_file {GIB}\n",
             "sys/fs/cgroup/jobs/memory.swap.max": f"{2 * GIB}\n",
             "sys/fs/cgroup/jobs/memory.swap.current": f"{GIB // 2}\n"}
    root = _root_with(tmp_path, files)
    free = free_memory(root)
    assert (free.ram, free.swap) == (15 * GIB, GIB + GIB // 2)
    assert free.source == f"the room left under the cgroup limit {root}/sys/fs/cgroup/jobs/memory.max"


def test_a_cgroup_v1_limit_is_read_at_the_mount_a_container_sees(tmp_path):
    files = {"proc/meminfo": MEMINFO, "proc/self/cgroup": "5:cpuacct,cpu:/x\n4:memory:/outside/path\n",
             "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{8 * GIB}\n",
             "sys/fs/cgroup/memory/memory.usage_in_bytes": f"{3 * GIB}\n",
             "sys/fs/cgroup/memory/memory.stat": "cache 9\ntotal_inactive_file 1024\n"}
    free = free_memory(_root_with(tmp_path, files))
    assert (free.ram, free.swap) == (5 * GIB + 1024, 4000000 * KIB)
    unlimited = {**files, "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}
    assert free_memory(_root_with(tmp_path, unlimited)).source == "MemAvailable"


def test_a_swap_limit_binds_without_a_memory_limit_and_page_cache_counts_as_free(tmp_path):
    """cgroup v2: a pod whose memory is unlimited but its swap not; a limit with the page cache
    (active and inactive) of checkpoints read before, which the kernel reclaims before it kills."""
    files = {"proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/pod\n",
             "sys/fs/cgroup/pod/memory.max": "max\n", "sys/fs/cgroup/pod/memory.current": f"{GIB}\n",
             "sys/fs/cgroup/pod/memory.swap.max": "0\n", "sys/fs/cgroup/pod/memory.swap.current": "0\n"}
    free = free_memory(_root_with(tmp_path / "unlimited", files))
    assert (free.ram, free.swap, free.source) == (50000000 * KIB, 0, "MemAvailable")
    cached = {**files, "sys/fs/cgroup/pod/memory.max": f"{20 * GIB}\n",
              "sys/fs/cgroup/pod/memory.current": f"{19 * GIB}\n",
              "sys/fs/cgroup/pod/memory.stat": f"active_file {4 * GIB}\ninactive_file {2 * GIB}\nshmem 5\n"}
    assert free_memory(_root_with(tmp_path / "cached", cached)).ram == 7 * GIB


def test_a_cgroup_v1_memory_and_swap_limit_leaves_the_swap_beyond_the_memory(tmp_path):
    """Docker's ``--memory 16g --memory-swap 19g`` on cgroup v1, 10 GiB used, none swapped."""
    files = {"proc/meminfo": MEMINFO, "proc/self/cgroup": "4:memory:/docker/x\n",
             "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{16 * GIB}\n",
             "sys/fs/cgroup/memory/memory.usage_in_bytes": f"{10 * GIB}\n",
             "sys/fs/cgroup/memory/memory.memsw.limit_in_bytes": f"{19 * GIB}\n",
             "sys/fs/cgroup/memory/memory.memsw.usage_in_bytes": f"{10 * GIB}\n"}
    free = free_memory(_root_with(tmp_path / "swap", files))
    assert (free.ram, free.swap) == (6 * GIB, 3 * GIB)
    no_swap = {**files, "sys/fs/cgroup/memory/memory.memsw.limit_in_bytes": f"{16 * GIB}\n"}
    assert free_memory(_root_with(tmp_path / "no_swap", no_swap))[:2] == (6 * GIB, 0)


def test_an_old_kernel_or_an_odd_cgroup_line_is_no_failure(tmp_path):
    old = _root_with(tmp_path / "old", {"proc/meminfo": "MemTotal: 100 kB\nMemFree: 50 kB\n"})
    assert free_memory(old) is None  # without MemAvailable nothing is checked
    odd = _root_with(tmp_path / "odd", {"proc/meminfo": MEMINFO, "proc/self/cgroup": "garbage\n0::/\n"})
    assert free_memory(odd).source == "MemAvailable"


def test_this_machine_reports_its_free_memory():
    free = free_memory()
    assert free is not None and free.ram >= 0 and free.swap >= 0


def test_weights_beyond_ram_and_swap_are_refused_with_what_lowers_them(i2v_root):
    planned = plan("i2v-A14B", i2v_root, offload_model=True)
    peak = host_plan(planned).peak
    with pytest.raises(InputError) as caught:
        check_host_memory(planned, FreeMemory(peak // 2, peak // 4, "MemAvailable"))
    message = str(caught.value)
    assert message.startswith("the weights would take at most ") and "of CPU memory at once (" in message
    for step in ("dit_fp8", "offload_model False", f"{ENV_VAR}=0"):
        assert step in message
    with pytest.warns(UserWarning, match="the rest goes to swap"):
        check_host_memory(planned, FreeMemory(peak // 2, peak, "MemAvailable"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_host_memory(planned, FreeMemory(peak, 0, "MemAvailable"))
        check_host_memory(planned, None)


NAMES = " (the command line's flags of those names)"
WEIGHS = "; fit_memory (--fit_memory) weighs both memories"
FP8 = "dit_fp8 (DiT weights in 8-bit floats: half the memory, not the official video)"


def test_pinned_blocks_beyond_ram_are_refused_whatever_the_swap(i2v_root):
    planned = plan("i2v-A14B", i2v_root, t5_cpu=True, stream_blocks=1, dit_fp8=True)
    host = host_plan(planned)
    with pytest.raises(InputError, match="the streamed blocks would pin .* which cannot be swapped out"):
        check_host_memory(planned, FreeMemory(host.pinned - 1, 100 * GIB, "MemAvailable"))
    assert host_remedy(planned) == f"to fit, try fewer stream_blocks{NAMES}{WEIGHS}"
    offloaded = plan("i2v-A14B", i2v_root, offload_model=True, stream_blocks=1)
    assert host_remedy(offloaded, pinned_only=True, placements=False) == f"to fit, try {FP8}{NAMES}"


def test_the_remedies_are_those_of_what_holds_the_memory(i2v_root):
    """A float32 text encoder on the CPU alone: neither float8 DiTs nor t5_cpu lower it."""
    encoder_only = plan("i2v-A14B", i2v_root, t5_cpu=True, dtype=torch.float32)
    assert host_plan(encoder_only).models[TEXT_ENCODER] > 0 and host_plan(encoder_only).pinned == 0
    steps = "dtype bfloat16 (half the bytes of float32), no t5_cpu (the text encoder on the GPU)"
    assert host_remedy(encoder_only) == f"to fit, try {steps}{NAMES}{WEIGHS}"
    offloaded = plan("i2v-A14B", i2v_root, offload_model=True)
    assert host_remedy(offloaded, placements=False) == f"to fit, try {FP8}{NAMES}"
    assert host_remedy(plan("i2v-A14B", i2v_root, offload_model=True, dit_fp8=True, t5_cpu=True),
                       placements=False) == "no option lowers them further"


def test_processes_of_one_machine_that_may_not_fit_together_are_warned_of(i2v_root, monkeypatch):
    streaming = plan("i2v-A14B", i2v_root, world=2, stream_blocks=1)
    host = host_plan(streaming)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    warning = r"in each of this machine's 2 processes \(.* GiB in all\): more than .*--nproc_per_node"
    with pytest.warns(UserWarning, match=warning):  # each fits, two do not
        check_host_memory(streaming, FreeMemory(host.peak, 0, "MemAvailable"))
    with pytest.warns(UserWarning, match=warning):  # their pinned blocks cannot go to swap
        check_host_memory(streaming, FreeMemory(2 * host.pinned - 1, 2 * host.peak, "MemAvailable"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_host_memory(streaming, FreeMemory(2 * host.peak, 0, "MemAvailable"))
        monkeypatch.setenv("LOCAL_RANK", "1")  # the machine's first process alone says it
        check_host_memory(streaming, FreeMemory(host.peak, 0, "MemAvailable"))
    # One process that cannot hold its own weights is refused, as a single process is.
    with pytest.raises(InputError, match="the streamed blocks would pin .* fewer stream_blocks") as caught:
        check_host_memory(streaming, FreeMemory(host.pinned - 1, 0, "MemAvailable"))
    assert WEIGHS in str(caught.value)


def test_processes_of_one_machine_that_fit_together_only_with_swap_are_told_so(i2v_root, monkeypatch):
    wide = plan("i2v-A14B", i2v_root, world=2, dtype=torch.float32, t5_cpu=True)
    host = host_plan(wide)
    assert host.pinned == 0 and host.peak == host.models[TEXT_ENCODER] > 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.warns(UserWarning, match=r"in each of this machine's 2 processes .* the rest goes to swap"):
        check_host_memory(wide, FreeMemory(host.peak, host.peak, "MemAvailable"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with pytest.warns(UserWarning, match=r"at once \(text encoder .*\): more than .* the rest goes to swap"):
        check_host_memory(wide, FreeMemory(host.peak - 1, host.peak, "MemAvailable"))


def test_sharded_models_take_no_cpu_memory_but_a_float32_text_encoders_load(i2v_root):
    """FSDP's DiTs load onto the GPUs block by block; a float32 text encoder is converted on the
    CPU before it is sharded, and is then not kept there, even with offload_model."""
    assert host_plan(plan("i2v-A14B", i2v_root, world=2, dit_fsdp=True, t5_fsdp=True)).peak == 0
    wide = plan("i2v-A14B", i2v_root, world=2, dtype=torch.float32, t5_fsdp=True, offload_model=True)
    host = host_plan(wide)
    assert host.models[TEXT_ENCODER] == 0 and host.loading >= module_bytes(wide.meta_models[TEXT_ENCODER])
    # bfloat16 would read its mapped file instead.
    sharded = plan("i2v-A14B", i2v_root, world=2, dtype=torch.float32, t5_fsdp=True)
    assert "dtype bfloat16" in host_remedy(sharded)


def test_a_dry_run_under_torchrun_says_the_count_is_each_processs(i2v_root, monkeypatch):
    from wan_runtime.generate import _host_memory_line

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    line = _host_memory_line(plan("i2v-A14B", i2v_root, world=4, stream_blocks=1))
    assert line.startswith("memory: the weights take at most ")
    assert " in each of this machine's 4 processes" in line
    assert "process" not in _host_memory_line(plan("i2v-A14B", i2v_root, stream_blocks=1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert " in this machine's one process" in _host_memory_line(plan("i2v-A14B", i2v_root, world=4))


@pytest.mark.parametrize(("value", "count"), [(None, 1), ("4", 4), ("0", 1), ("four", 1)])
def test_the_processes_of_a_machine_are_torchruns_local_world(monkeypatch, value, count):
    if value is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", value)
    assert local_processes() == count


def test_the_check_can_be_turned_off_and_its_setting_is_checked(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "0")
    assert free_to_check() is None
    monkeypatch.setenv(ENV_VAR, "no")
    with pytest.raises(InputError, match=rf"{ENV_VAR} must be 1 .* or 0 \(do not check\), got 'no'"):
        free_to_check()
    monkeypatch.setenv(ENV_VAR, "")  # as `export WAN_HOST_MEMORY_CHECK=` leaves it: the default
    assert free_to_check() is not None
    monkeypatch.delenv(ENV_VAR)
    assert free_to_check() is not None


def test_load_refuses_weights_beyond_the_free_memory_before_loading(ti2v_root, monkeypatch):
    tiny = FreeMemory(1000, 0, "MemAvailable")
    monkeypatch.setattr("wan_runtime.pipelines.host_memory.free_memory", lambda: tiny)
    monkeypatch.setattr("wan_runtime.pipelines.loading._resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=GIB))
    monkeypatch.setattr("wan_runtime.pipelines.loading.load_text_encoder", None)  # nothing may load
    with pytest.raises(InputError, match=r"more than the 0.00 GiB of RAM free \(MemAvailable\) and 0.00 GiB"):
        load_pipeline("ti2v-5B", ti2v_root, device="cuda", offload_model=True)
    assert check_pipeline("ti2v-5B", ti2v_root, device="cuda", check_fits=False).device.type == "cuda"


def test_on_the_cpu_device_nothing_is_checked(ti2v_root):
    """There the weights kept in their files' dtype are read from the mapped files (see the
    measurement below), which the count does not tell apart: it is an upper bound."""
    planned = plan("ti2v-5B", ti2v_root, device=torch.device("cpu"))
    check_host_memory(planned, FreeMemory(0, 0, "MemAvailable"))


def test_fit_memory_skips_placements_beyond_the_free_memory(i2v_root):
    base = _base(i2v_root)
    estimates = _estimates(base, I2V)
    roomy = fit_placement(base, estimates, 10**15, {})
    assert host_plan(roomy.plan).peak == 0  # everything on the GPU
    # Every model on the GPU is too much for this budget; offloading, the first that fits it, is not
    # allowed by the free memory: the next placement keeps less in CPU memory.
    first = fit_placement(base, estimates, _most_needed(base, estimates, (False, False, 0)) - 1, {})
    assert first.options["offload_model"]
    free = FreeMemory(host_plan(first.plan).peak - 1, 0, "MemAvailable")
    second = fit_placement(base, estimates, first.budget, {}, free)
    assert second.options != first.options and host_plan(second.plan).fits(free)
    # With swap enough for the first, the one that fits in RAM still comes first; the swap serves
    # only when no placement fits in RAM.
    swap = free._replace(swap=GIB)
    assert fit_placement(base, estimates, first.budget, {}, swap).options == second.options
    assert fit_placement(base, estimates, first.budget, first.options, swap).options == first.options
    with pytest.raises(NoFit):
        fit_placement(base, estimates, first.budget, first.options, free)
    with pytest.raises(NoFit, match=r"every placement that fits the video in .* needs more CPU memory "
                                    r"than the machine's 0.00 GiB of RAM free \(MemAvailable\) .* the least, "
                                    r"offload_model False, t5_cpu False, stream_blocks 1, takes .*dit_fp8"):
        fit_placement(base, estimates, first.budget, {"t5_cpu": False}, FreeMemory(2**20, 0, "MemAvailable"))


# The measuring scripts' start: Linux's count of the process's anonymous pages (``RssAnon``), the
# pages the out-of-memory killer weighs; not those of mapped files.
ANONYMOUS = """
import sys, torch

def anonymous():
    status = open("/proc/self/status").read()
    return int(status.split("RssAnon:")[1].split()[0]) * 1024
"""


def measure(script: str, *args: str, **env: str) -> list[int]:
    """The numbers ``script`` (after ``ANONYMOUS``) prints, run with ``args`` in a fresh process
    from the repository, with ``env`` added to its environment."""
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).parents[2], env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return [int(x) for x in result.stdout.split()]


MEASURE = ANONYMOUS + """
from wan_runtime.models.pinned_chunks import move_into_chunks
from wan_runtime.pipelines import load_pipeline

before = anonymous()
pipeline = load_pipeline("ti2v-5B", sys.argv[1], device="cpu", dtype=torch.float32, t5_cpu=True,
                         stream_blocks=int(sys.argv[2]))
streaming = pipeline.dits["dit"].block_streaming
blocks = [pipeline.dits["dit"].blocks[i] for i in streaming.indices]
move_into_chunks([t for block in blocks for t in [*block.parameters(), *block.buffers()]], pin=False)
print(anonymous() - before)
"""


@pytest.fixture(scope="module")
def wide_ti2v_root(tmp_path_factory):
    """A ti2v-5B folder whose DiT takes 0.4 GB in float32."""
    root = write_task_checkpoint("ti2v-5B", tmp_path_factory.mktemp("ti2v-wide"))
    for shard in root.glob("diffusion_pytorch_model*"):  # ti2v-5B's DiT is in the root folder
        shard.unlink()
    write_dit(root, replace(TINY_TI2V, dim=1024, ffn_dim=4096, num_heads=8, num_layers=6), shards=2)
    return root


@pytest.mark.parametrize("count", [1, 5])
def test_streamed_blocks_and_a_float32_text_encoder_take_the_memory_counted(wide_ti2v_root, count):
    """Measured by Linux in a fresh process around the load of a ti2v-5B folder with a DiT of 0.4 GB
    in float32 (``RssAnon``: the pages the out-of-memory killer weighs, not the mapped files'), on
    the CPU as it would load for a GPU with ``t5_cpu``: the text encoder converted from its bfloat16
    file, the streamed blocks moved into their buffers as a GPU's streaming moves them (not pinned
    here), the rest of the DiT and the VAE read from their mapped files, in their files' dtype."""
    root = wide_ti2v_root
    planned = plan("ti2v-5B", root, dtype=torch.float32, t5_cpu=True, stream_blocks=count)
    host = host_plan(planned)
    [measured] = measure(MEASURE, str(root), str(count))
    # Unlike pinned ones, the pages of a CPU buffer that no tensor fills are never touched.
    streamed = sum(module_bytes(b) for b in streamed_blocks(planned.meta_models["DiT"], count))
    touched = host.settled - host.pinned + streamed
    assert streamed > count * 60 * 2**20 and host.models[TEXT_ENCODER] > 0
    # Loading itself leaves about 4 MB behind (the tokenizer, Python's objects): a fixed slack.
    slack = 8 * 2**20
    assert abs(measured - touched) <= 0.01 * touched + slack, (touched, measured)
    assert measured <= host.settled + slack


GPU_MEASURE = ANONYMOUS + """
from wan_runtime.pipelines import host_plan, load_pipeline

torch.empty(1, device="cuda")  # the CUDA context and the pinned allocator, before the count
torch.empty(1).pin_memory()
dtype = getattr(torch, sys.argv[2])
before = anonymous()
pipeline = load_pipeline("ti2v-5B", sys.argv[1], device="cuda", dtype=dtype, offload_model=True)
for name in list(pipeline.residency.placement):  # each model's turn on the GPU, and back
    pipeline.residency.activate(name)
pipeline.residency.release()
# Counted whole, an offloaded DiT's float32 weights are the pages of its float32 file.
dit = pipeline.dits["dit"].resident_modules()
mapped = sum(p.numel() * p.element_size() for p in dit.parameters() if p.dtype == torch.float32)
print(anonymous() - before, host_plan(pipeline.weight_plan).settled - mapped)
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="offloading needs a GPU")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_an_offloaded_gpu_run_takes_the_cpu_memory_counted(wide_ti2v_root, dtype):
    """Linux's count in a fresh process around an offloaded load on the GPU and each model's turn
    there and back: in bfloat16 the DiT converted from its float32 file and the text encoder the
    pages of its bfloat16 file; in float32 the other way round. The DiT's float32 weights, counted
    whole, are the pages of its file. (The pinned buffers' bytes: ``test_pinned_chunks``.)"""
    # glibc keeps some freed heap memory (allocations under its mmap threshold, up to 32 MB: this
    # DiT's converted tensors, not a 14B one's); each allocation its own mapping, Linux counts
    # what the tensors hold, which is what the count is of.
    measured, copies = measure(GPU_MEASURE, str(wide_ti2v_root), dtype, MALLOC_MMAP_THRESHOLD_="65536")
    assert copies > 20 * 2**20 and abs(measured - copies) <= 0.02 * copies + 16 * 2**20, (copies, measured)
