"""How much CPU memory a pipeline's weights take, and whether the machine has it free.

Weights wait in CPU memory under three options: ``offload_model`` (the big models, which keep
their CPU tensors while a copy of one works on the GPU: ``residency``), ``stream_blocks`` (the
DiTs' last blocks, pinned: ``wan_runtime.models.pinned_chunks``) and ``t5_cpu`` in float32 (the
text encoder's bfloat16 file converted). What counts is the memory the kernel cannot drop:
copies. A text encoder in bfloat16 on the CPU, offloaded too, reads its memory-mapped file (the
release's is bfloat16), whose pages the kernel drops and reads again as it needs, so it is not
counted. A DiT that waits on the CPU (offloaded) loads there whole first, one kept on the GPU its
streamed blocks alone (FSDP's, sharded block by block as it loads, none); the speech encoder
loads there whole. Those loads, offloaded DiTs and, with the device the CPU, every model are
counted whole: exact for weights converted as they load (a float32 file's DiT run in bfloat16),
an upper bound for those kept in their file's dtype, which read the mapped file too.

A machine without that much memory free raises no error: minutes into loading its out-of-memory
killer ends the process, which prints one word, "Killed". So ``load_pipeline`` compares the
plan with the memory free before it loads a model (``check_host_memory``). Free is Linux's
``MemAvailable`` (free pages and those it can reclaim), at most the room left under the process's
cgroup limit (a container's memory), and free swap for the pageable weights; pinned pages cannot
be swapped out. Several processes (``torchrun``) count themselves before any has loaded: each is
refused what it could not hold alone, and those on one machine together are compared with its
free memory and only warned about (the sum is a bound: they need not peak together). Elsewhere
than Linux, on the CPU device (an upper bound), and with ``WAN_HOST_MEMORY_CHECK=0`` (for memory
the kernel does not count as available, such as a ZFS cache), nothing is checked.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from wan_runtime.env_switches import env_switch
from wan_runtime.errors import InputError
from wan_runtime.models.device_copies import module_tensors
from wan_runtime.models.pinned_chunks import layout
from wan_runtime.pipelines.memory_advice import DIT_FP8, TO_BFLOAT16, Step, say
from wan_runtime.pipelines.memory_plan import (
    _GIB,
    AUDIO_ENCODER,
    TEXT_ENCODER,
    WeightPlan,
    is_dit,
    module_bytes,
    streamed_blocks,
)

ENV_VAR = "WAN_HOST_MEMORY_CHECK"
# A cgroup v1 without a limit reports about 2**63 bytes.
_NO_LIMIT = 2**60


class FreeMemory(NamedTuple):
    """The CPU memory this process can still take: ``ram`` without swapping, ``swap`` free, and
    where ``ram`` was read (``source``)."""

    ram: int
    swap: int
    source: str

    def describe(self) -> str:
        """The free memory, in words."""
        return f"{self.ram / _GIB:.2f} GiB of RAM free ({self.source}) and {self.swap / _GIB:.2f} GiB of swap"


@dataclass(frozen=True)
class HostPlan:
    """The bytes of a pipeline's weights in CPU memory: each model's once loaded (``models``,
    pageable), the streamed blocks' buffers (``pinned``: they cannot be swapped out), and the most
    at once while the models load (``loading``)."""

    models: dict[str, int]
    pinned: int
    loading: int

    @property
    def settled(self) -> int:
        """The bytes once every model has loaded."""
        return sum(self.models.values()) + self.pinned

    @property
    def peak(self) -> int:
        """The most bytes at once, loading or after."""
        return max(self.settled, self.loading)

    def fits(self, free: FreeMemory) -> bool:
        """Whether the pinned bytes fit in ``free``'s RAM and all of them in its RAM and swap."""
        return self.pinned <= free.ram and self.peak <= free.ram + free.swap

    def on_machine(self, processes: int) -> HostPlan:
        """The bytes of ``processes`` processes of this plan on one machine, their peaks taken
        together (a bound: they need not peak at once)."""
        if processes == 1:
            return self
        return HostPlan({"all": (self.peak - self.pinned) * processes}, self.pinned * processes, 0)

    def describe(self, processes: int = 1) -> str:
        """The peak and what makes it, in words; of each of ``processes`` on one machine, with
        their sum, when several."""
        parts = [f"{name} {size / _GIB:.2f} GiB" for name, size in self.models.items() if size]
        if self.pinned:
            parts.append(f"the streamed blocks {self.pinned / _GIB:.2f} GiB, pinned")
        if self.loading > self.settled:
            parts.append(f"{self.loading / _GIB:.2f} GiB while a model loads through it")
        if not parts:
            return "no CPU memory"
        each = f"at most {self.peak / _GIB:.2f} GiB of CPU memory at once ({', '.join(parts)})"
        if processes == 1:
            return each
        total = self.on_machine(processes).peak / _GIB
        return f"{each}, in each of this machine's {processes} processes ({total:.2f} GiB in all)"


def host_plan(plan: WeightPlan) -> HostPlan:
    """The CPU memory of ``plan``'s weights (one process's), as the module's docstring counts it,
    in the order ``load_pipeline`` loads the models."""
    options, on_cpu = plan.options, plan.device.type == "cpu"
    waiting = on_cpu or options.offload_model
    models: dict[str, int] = {}
    pinned = loading = 0
    order = sorted(plan.meta_models, key=lambda name: name != TEXT_ENCODER)
    for name in order:
        model = plan.meta_models[name]
        before = sum(models.values()) + pinned
        if name == TEXT_ENCODER:
            mapped = next(model.parameters()).dtype == torch.bfloat16
            # Sharded onto the GPUs, it is neither kept on the CPU nor offloaded.
            kept = on_cpu or ((options.t5_cpu or options.offload_model) and not options.t5_fsdp)
            models[name] = module_bytes(model) if kept and not mapped else 0
            if options.t5_fsdp and not mapped:  # converted on the CPU, then sharded
                loading = max(loading, module_bytes(model))
        elif is_dit(name):
            blocks = [] if on_cpu else streamed_blocks(model, options.stream_blocks)
            sizes = [t.numel() * t.element_size() for b in blocks for t in module_tensors(b)]
            chunks = layout(sizes).chunks
            resident = module_bytes(model) - sum(sizes)
            models[name] = resident if waiting else 0
            if waiting or chunks:
                through = module_bytes(model) if waiting else sum(sizes)
                loading = max(loading, before + through + max(chunks, default=0))
            pinned += sum(chunks)
        else:
            models[name] = module_bytes(model) if on_cpu or (name == AUDIO_ENCODER and waiting) else 0
            if name == AUDIO_ENCODER:  # transformers loads it on the CPU first
                loading = max(loading, before + module_bytes(model))
    return HostPlan(models, pinned, loading)


def free_memory(root: Path = Path("/")) -> FreeMemory | None:
    """The machine's free memory as the module's docstring reads it (``root``: where ``/proc`` and
    ``/sys`` are, for tests); None where ``/proc/meminfo`` has no ``MemAvailable`` (not Linux, or
    a kernel older than 3.14)."""
    try:
        info = _fields((root / "proc/meminfo").read_text(), scale=1024)
    except OSError:
        return None
    if "MemAvailable" not in info:
        return None
    ram, swap, source = info["MemAvailable"], info.get("SwapFree", 0), "MemAvailable"
    for name, room, swap_room in _cgroup_rooms(root):
        if room is not None and room < ram:
            ram, source = room, f"the room left under the cgroup limit {name}"
        if swap_room is not None:
            swap = min(swap, swap_room)
    return FreeMemory(ram, swap, source)


def _fields(text: str, scale: int = 1) -> dict[str, int]:
    """``name value`` (or ``name: value kB``) lines as numbers of bytes."""
    fields = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0]] = int(parts[1]) * scale
    return fields


class _Cgroup(NamedTuple):
    """A cgroup version's memory files: under ``mount``, the ``limit`` and its ``usage``, the page
    cache fields of ``memory.stat`` (which the kernel reclaims before it kills), and the swap
    limit and usage; version 1's count memory and swap together."""

    mount: str
    limit: str
    usage: str
    page_cache: tuple[str, str]
    swap_limit: str
    swap_usage: str
    swap_with_memory: bool


_V2 = _Cgroup("sys/fs/cgroup", "memory.max", "memory.current", ("active_file", "inactive_file"),
              "memory.swap.max", "memory.swap.current", False)
_V1 = _Cgroup("sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
              ("total_active_file", "total_inactive_file"), "memory.memsw.limit_in_bytes",
              "memory.memsw.usage_in_bytes", True)


def _cgroup_rooms(root: Path) -> list[tuple[str, int | None, int | None]]:
    """Each cgroup over this process with a limit: its limit file, the bytes of memory left under
    it (its page cache counted as free; None without a memory limit) and of swap (None without a
    swap limit)."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            rooms += _limits(root, _V2, path)
        elif "memory" in controllers.split(","):
            rooms += _limits(root, _V1, path)
    return rooms


def _limits(root: Path, cgroup: _Cgroup, path: str) -> list[tuple[str, int | None, int | None]]:
    """The limits of the cgroup ``path`` and its ancestors (a container sees its own cgroup at the
    mount itself, so a path missing there means the mount)."""
    mount = root / cgroup.mount
    leaf = mount / path.lstrip("/")
    folder = leaf if leaf.is_dir() else mount
    rooms = []
    for current in [folder, *folder.parents]:
        if not current.is_relative_to(mount):
            break
        stat = _read_fields(current / "memory.stat")
        cache = sum(stat.get(name, 0) for name in cgroup.page_cache)
        room = _room(current, cgroup.limit, cgroup.usage, cache)
        swap = _room(current, cgroup.swap_limit, cgroup.swap_usage, cache if cgroup.swap_with_memory else 0)
        if swap is not None and cgroup.swap_with_memory:  # memory and swap together: the swap is the rest
            room = swap if room is None else min(room, swap)
            swap -= room
        if room is not None or swap is not None:
            rooms.append((str(current / cgroup.limit), room, swap))
    return rooms


def _room(folder: Path, limit_file: str, usage_file: str, reclaimable: int) -> int | None:
    """The bytes left under the limit in ``limit_file``, None without one (a missing file, "max",
    or version 1's "unlimited", about 2**63)."""
    try:
        limit = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if not limit.isdigit() or int(limit) >= _NO_LIMIT:
        return None
    return max(int(limit) - usage + reclaimable, 0)


def _read_fields(path: Path) -> dict[str, int]:
    try:
        return _fields(path.read_text())
    except OSError:
        return {}


def free_to_check() -> FreeMemory | None:
    """The free memory to check weights against (``free_memory``); None where nothing is checked:
    not Linux, or ``WAN_HOST_MEMORY_CHECK=0``."""
    checked = env_switch(ENV_VAR, True, "check that the weights fit in CPU memory", "do not check")
    return free_memory() if checked else None


def local_processes() -> int:
    """How many processes of this launch share this machine (torchrun's ``LOCAL_WORLD_SIZE``;
    1 without it)."""
    try:
        return max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def check_host_memory(plan: WeightPlan, free: FreeMemory | None) -> None:
    """Raise ``InputError`` if ``plan``'s weights need more CPU memory than ``free`` (see
    ``HostPlan.fits``), naming what lowers them; warn when they would need the swap, which slows
    every copy. With several processes (``plan``'s world) each is checked alone, and when those
    on this machine together may need more than ``free`` its first process warns. Nothing is
    checked without ``free`` or on the CPU device (the module's docstring)."""
    if free is None or plan.device.type == "cpu":
        return
    host = host_plan(plan)
    if host.fits(free):
        _warn_when_short(host, free, local_processes() if plan.options.world > 1 else 1)
        return
    if host.pinned > free.ram:
        problem = (f"the streamed blocks would pin {host.pinned / _GIB:.2f} GiB of CPU memory, which "
                   f"cannot be swapped out: more than the {free.describe()}")
    else:
        problem = f"the weights would take {host.describe()}: more than the {free.describe()}"
    remedy = host_remedy(plan, pinned_only=host.pinned > free.ram)
    raise InputError(f"{problem}; {remedy}; or free memory (if it is there but not counted as available, set "
                     f"{ENV_VAR}=0)")


def _warn_when_short(host: HostPlan, free: FreeMemory, local: int) -> None:
    # Each of the ``local`` processes on this machine counts itself before any has loaded, so each
    # sees the whole machine free; the first of them speaks for all. Their sum is a bound, not a
    # certainty (they need not peak together), hence a warning, not a refusal.
    if local > 1 and os.environ.get("LOCAL_RANK", "0") != "0":
        return
    together = host.on_machine(local)
    if not together.fits(free):
        warnings.warn(f"the weights take {host.describe(local)}: more than the {free.describe()}; if the "
                      "run is killed (\"Killed\"), start fewer processes per machine (torchrun "
                      "--nproc_per_node) or free memory", stacklevel=3)
    elif together.peak > free.ram:
        warnings.warn(f"the weights take {host.describe(local)}: more than the {free.describe()}; the rest "
                      "goes to swap, which slows the run", stacklevel=3)


def host_remedy(plan: WeightPlan, pinned_only: bool = False, placements: bool = True) -> str:
    """What lowers the CPU memory of ``plan``'s weights (with ``pinned_only``, of its streamed
    blocks), of what its options allow and have not done, as the models there hold it; where the
    models wait only with ``placements`` (``fit_memory`` has tried every placement)."""
    o, host = plan.options, host_plan(plan)
    dits = host.pinned > 0 or (not pinned_only and any(b for n, b in host.models.items() if is_dit(n)))
    # A float32 text encoder that FSDP shards is converted on the CPU first.
    sharded_wide = o.t5_fsdp and o.dtype == torch.float32
    encoder = not pinned_only and (host.models.get(TEXT_ENCODER, 0) > 0 or sharded_wide)
    steps = []
    if dits and not o.dit_fp8:
        steps.append(DIT_FP8)
    if (dits or encoder) and o.dtype == torch.float32:
        steps.append(TO_BFLOAT16)
    if placements:
        if encoder and o.t5_cpu:
            steps.append(Step("t5_cpu", False, "the text encoder on the GPU"))
        if o.offload_model and not pinned_only:
            steps.append(Step("offload_model", False, "the models stay on the GPU"))
        if host.pinned:
            steps.append(Step("stream_blocks", "fewer"))
    fits_them = placements and steps
    weighs = "; fit_memory (--fit_memory) weighs both memories" if fits_them else ""
    return say(steps, flags=False) + weighs
