"""``fit_memory`` (``--fit_memory``) under torchrun: each estimate is of one process's share, and
every process chooses the same placement, fitted to the least free memory of any GPU and of any
machine, the machine's shared by its processes. Two CPU processes (gloo) stand in for two GPUs'
(NCCL): the GPUs are faked, the fit reads only their free memory."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
from pathlib import Path

import torch

from tests.distributed.ranks import run_ranks
from tests.pipelines.test_memory_plan import plan as cuda_plan
from wan_runtime.pipelines import VideoShape, estimate_memory
from wan_runtime.pipelines.host_memory import FreeMemory, host_plan
from wan_runtime.pipelines.memory_fit import RESERVED, fit_placement, needed
from wan_runtime.tasks import task_spec

GIB = 2**30
I2V = VideoShape(64, 48, 5, True, (3.5, 3.5))
# The tiny ti2v-5B's video at its size, 5 frames, from text, as the command line below makes it.
TI2V = VideoShape(1280, 704, 5, False, 5.0)
ROOMY = 80 * GIB
DRY_RUN = ["--frame_num", "5", "--device", "cuda", "--dry_run", "--ulysses_size", "2", "--fit_memory"]


def _stand_in_for_gpus() -> None:
    """This process as one with two GPUs, with the checks of a CPU launch where they ask for the
    backend that moves the tensors (gloo)."""
    import wan_runtime.pipelines.loading as loading

    checks = loading.check_parallel
    loading.check_parallel = lambda spec, device, *rest: checks(spec, torch.device("cpu"), *rest)
    torch.cuda.set_device = lambda device: None
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 2


def _free(rank: int, free_gpu: list[int], free_ram: list[int]) -> None:
    """This process's GPU with ``free_gpu[rank]`` bytes free, its machine ``free_ram[rank]``."""
    from types import SimpleNamespace

    import wan_runtime.pipelines.memory_fit as memory_fit

    torch.cuda.mem_get_info = lambda device=None: (free_gpu[rank], 2 * free_gpu[rank])
    properties = SimpleNamespace(total_memory=2 * free_gpu[rank], name="fake GPU", major=9, minor=0)
    torch.cuda.get_device_properties = lambda device=None: properties
    memory_fit.free_to_check = lambda: FreeMemory(free_ram[rank], 0, "MemAvailable")


def _in_rank(rank: int, i2v: str | None, argv: list[str], gpus: list[int], ram: list[int], local: list[int],
             out: str) -> None:
    """Rank ``rank`` of a launch whose machines run ``local[rank]`` processes: the fit of ``I2V``
    from the release folder ``i2v`` (if given) with the GPUs and machines so free, then the
    command line ``argv`` with each GPU roomy; what they give saved in ``out``."""
    from wan_runtime.generate import main
    from wan_runtime.pipelines import fit_memory

    os.environ["LOCAL_WORLD_SIZE"] = str(local[rank])
    torch.set_num_threads(1)
    _stand_in_for_gpus()
    _free(rank, gpus, ram)
    fit = None if i2v is None else fit_memory("i2v-A14B", i2v, [I2V], device=f"cuda:{rank}", ulysses_size=2)
    _free(rank, [ROOMY] * 2, [GIB] * 2)
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = main(argv)
    fitted = None if fit is None else (fit.options, fit.budget, fit.estimates)
    with open(f"{out}/{rank}.pkl", "wb") as file:
        pickle.dump((fitted, code, printed.getvalue().splitlines(), errors.getvalue().splitlines()), file)


def _ranks(out: Path, *args: object) -> list[tuple]:
    """What ``_in_rank`` gives in each of two processes."""
    run_ranks(_in_rank, 2, *args, str(out))
    return [pickle.loads((out / f"{rank}.pkl").read_bytes()) for rank in range(2)]


def test_every_process_places_the_models_for_the_fullest_gpu_and_machine(i2v_root, ti2v_root, tmp_path):
    plan = cuda_plan("i2v-A14B", i2v_root, world=2)
    estimates = {I2V: estimate_memory(plan, task_spec("i2v-A14B"), I2V, False, 2)}
    assert estimates != {I2V: estimate_memory(plan, task_spec("i2v-A14B"), I2V)}  # a share of the tokens
    on_gpu = max(needed(stage) for stage in estimates[I2V].placed(plan.placed(False, False, 0)).stages)
    offloaded = host_plan(plan.placed(True, False, 0)).peak
    # Rank 0's GPU holds every model, rank 1's one byte less; rank 1's machine holds the offloaded
    # weights of one process, not of its two.
    free_gpu, free_ram = [on_gpu + RESERVED, on_gpu + RESERVED - 1], [GIB, 2 * offloaded - 1]
    least = FreeMemory(free_ram[1], 0, "MemAvailable")
    alone = {"rank 0": fit_placement(plan, estimates, on_gpu, {}, FreeMemory(GIB, 0, "MemAvailable"), 2),
             "rank 1, one process": fit_placement(plan, estimates, on_gpu - 1, {}, least, 1)}
    expected = fit_placement(plan, estimates, on_gpu - 1, {}, least, 2)
    assert alone["rank 0"].options == {"offload_model": False, "t5_cpu": False, "stream_blocks": 0}
    assert alone["rank 1, one process"].options["offload_model"]
    assert expected.options == {"offload_model": False, "t5_cpu": False, "stream_blocks": 1}

    # Rank 1's machine runs one process, rank 0's two: the most of any machine count.
    dry_run = ["--ckpt_dir", str(ti2v_root), *DRY_RUN]
    results = _ranks(tmp_path, str(i2v_root), dry_run, free_gpu, free_ram, [2, 1])
    for rank, (fitted, code, *_) in enumerate(results):
        on_its_gpu = dataclasses.replace(expected.estimates[I2V], device=torch.device("cuda", rank))
        assert code == 0 and fitted == (expected.options, on_gpu - 1, {I2V: on_its_gpu})
    # The command line's fit (each GPU roomy), told by the first process alone, is that of each
    # process's share.
    ti2v = cuda_plan("ti2v-5B", ti2v_root, world=2)
    shares = {TI2V: estimate_memory(ti2v, task_spec("ti2v-5B"), TI2V, False, 2)}
    told = fit_placement(ti2v, shares, ROOMY - RESERVED, {}, FreeMemory(GIB, 0, "MemAvailable"), 2)
    (_, _, first, _), (_, _, second, _) = results
    assert f"fit_memory: {told.describe()}" in first
    assert told.describe().endswith(" GiB budget of each of the 2 GPUs")
    assert not [line for line in second if line.startswith("fit_memory: ")]


def test_what_no_placement_fits_is_told_by_the_first_process_alone(ti2v_root, tmp_path):
    small = ["--ckpt_dir", str(ti2v_root), *DRY_RUN, "2.01"]  # the kernels' 2 GiB workspace and 0.01 more
    results = _ranks(tmp_path, None, small, [ROOMY] * 2, [GIB] * 2, [2, 2])
    assert [code for _, code, *_ in results] == [2, 2]
    first, second = ([line for line in errors if line.startswith("error: ")] for *_, errors in results)
    assert len(first) == 1 and first[0].startswith("error: rank 0: no placement of the models fits the video "
                                                   "in 2.01 GiB")
    assert second == []
