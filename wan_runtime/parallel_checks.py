"""The checks of a multi-process generation's settings (``load_pipeline``'s ``ulysses_size``,
``dit_fsdp`` and ``t5_fsdp``), made before anything loads; the command line makes the same ones
on its flags (``wan_runtime.cli_args``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from wan_runtime.checks import is_int
from wan_runtime.errors import InputError

if TYPE_CHECKING:  # tasks imports the models, which import the checks here
    from wan_runtime.tasks import TaskSpec


def parallel_problems(
    spec: TaskSpec, world: int, ulysses_size: int, dit_fsdp: bool, t5_fsdp: bool, offload_model: bool,
    t5_cpu: bool, flag: str = "",
) -> list[str]:
    """What is wrong with these settings in a launch of ``world`` processes, one message each;
    ``flag`` prefixes the setting names (``"--"`` on the command line)."""
    if not is_int(ulysses_size) or ulysses_size < 1:
        return [f"{flag}ulysses_size must be a positive number of processes, got {ulysses_size!r}"]
    problems = []
    if ulysses_size > 1 and ulysses_size != world:
        problems.append(f"{flag}ulysses_size {ulysses_size} splits each DiT forward over {ulysses_size} "
                        f"processes but this launch has {world}: start {ulysses_size} with torchrun "
                        f"--nproc_per_node {ulysses_size} (one per GPU), or use {flag}ulysses_size 1")
    for name, on in (("dit_fsdp", dit_fsdp), ("t5_fsdp", t5_fsdp)):
        if on and world == 1:
            problems.append(f"{flag}{name} shards weights over the processes of a torchrun launch, and this "
                            f"run is one process: start one per GPU with torchrun --nproc_per_node N, or "
                            f"drop {flag}{name}")
    if dit_fsdp and offload_model:
        problems.append(f"{flag}dit_fsdp keeps each GPU's share of the DiT weights on it, so they cannot be "
                        f"offloaded: set {flag}offload_model False (the default under torchrun) or drop "
                        f"{flag}dit_fsdp")
    if t5_fsdp and t5_cpu:
        problems.append(f"{flag}t5_fsdp shards the text encoder over the GPUs and {flag}t5_cpu keeps it on "
                        "the CPU: choose one")
    return problems


def check_parallel(
    spec: TaskSpec, device: torch.device, ulysses_size: int, dit_fsdp: bool, t5_fsdp: bool,
    offload_model: bool, t5_cpu: bool,
) -> None:
    """``InputError`` for ``parallel_problems`` in the initialised process group (one process
    without one), and for a group whose backend cannot move ``device``'s tensors."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    problems = parallel_problems(spec, world, ulysses_size, dit_fsdp, t5_fsdp, offload_model, t5_cpu)
    if world > 1 and (ulysses_size > 1 or dit_fsdp or t5_fsdp):
        backend = dist.get_backend()
        needed = "nccl" if device.type == "cuda" else "gloo"
        if needed not in backend:
            problems.append(f"the process group's backend {backend!r} does not serve {device.type} tensors; "
                            f"initialise it with {needed!r}")
    if problems:
        raise InputError("; ".join(problems))


def check_heads_split(num_heads: int, ulysses_size: int) -> None:
    """``InputError`` unless a DiT's ``num_heads`` split evenly over ``ulysses_size`` processes."""
    if num_heads % ulysses_size:
        raise InputError(f"ulysses_size {ulysses_size} does not divide the DiT's {num_heads} attention "
                         "heads, which sequence parallelism splits over the processes; launch a number of "
                         f"processes that divides {num_heads}, with ulysses_size that number")


def check_heads(spec: TaskSpec, root: Path, ulysses_size: int) -> None:
    """``check_heads_split`` for every DiT of ``spec``'s release folder ``root`` (its config and
    safetensors headers only)."""
    from wan_runtime.models import WanModel
    from wan_runtime.models.s2v_dit import WanModelS2V

    model_class = WanModel if spec.audio_dir is None else WanModelS2V
    for folder in spec.dit_folders:
        check_heads_split(model_class.read_checkpoint(root / folder)[0].num_heads, ulysses_size)
