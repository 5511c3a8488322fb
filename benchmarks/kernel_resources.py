"""What each Triton kernel costs a GPU, read from its compiled code on a machine without one.

    python -m benchmarks.kernel_resources [--arch 90] [--out-dir DIR]

Every op of ``bench_kernels`` runs its ``triton`` implementation on meta tensors of the DiT's real
shapes; the kernel launches are intercepted rather than run, and each distinct launch is compiled
for the target GPU with the specialisation a real launch gets (16-byte-aligned pointers and
integers divisible by 16 marked so, integers equal to 1 folded). From the compiled code: registers
per thread, local-memory bytes (spills), shared memory, the widths of the global loads and stores
(16 bytes is a vectorised access), the layout conversions Triton inserted (each a round trip
through shared memory), the load sites it left as loads to registers and those it made
asynchronous copies to shared memory (one a stage of a loop it pipelined), and how many programs
an SM can hold at once: the first question when a
memory-bound kernel falls short of copy bandwidth is whether enough loads are in flight.

Triton here may be newer than on the GPU machine; the numbers are those of this Triton.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction, native_specialize_impl

from benchmarks.bench_kernels import OPS, SHAPES, Inputs, Op, Shape
from benchmarks.common import print_table, save_results
from wan_kernels import dispatch


@dataclass(frozen=True)
class SM:
    """Per-SM limits that bound how many programs are resident (CUDA occupancy rules)."""

    registers: int = 65536
    warps: int = 64
    programs: int = 32
    shared_bytes: int = 233472
    reserved_shared_per_program: int = 1024
    register_granule: int = 256


# Shared memory per SM as the CUDA occupancy calculator counts it: 228 KB on sm_90, 164 KB on sm_80.
SMS = {90: SM(), 80: SM(shared_bytes=167936)}
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


@dataclass(frozen=True)
class Launch:
    """One intercepted ``kernel[grid](...)`` call."""

    kernel: JITFunction
    grid: tuple[int, ...]
    values: dict[str, object]
    options: dict[str, int]


@contextmanager
def intercepted_launches() -> Iterator[list[Launch]]:
    """Record every Triton kernel launch inside the block instead of running it."""
    launches: list[Launch] = []
    original = JITFunction.run

    def record(self: JITFunction, *args: object, grid: object, warmup: bool, **kwargs: object) -> None:
        values = dict(zip(self.arg_names, args, strict=False))  # the rest come as keywords
        values.update((k, v) for k, v in kwargs.items() if k not in LAUNCH_OPTIONS)
        options = {k: v for k, v in kwargs.items() if k in LAUNCH_OPTIONS}
        launches.append(Launch(self, tuple(grid), values, options))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def _source(launch: Launch) -> ASTSource:
    """The kernel with the signature, constants and divisibility hints a real launch would get."""
    signature, constants, attrs = {}, {}, {}
    for index, param in enumerate(launch.kernel.params):
        value = launch.values[param.name]
        if param.is_constexpr:
            signature[param.name], constants[param.name] = "constexpr", value
            continue
        kind, spec = native_specialize_impl(BaseBackend, value, False, not param.do_not_specialize, True)
        if kind == "constexpr":
            signature[param.name], constants[param.name] = kind, spec
            continue
        signature[param.name] = kind
        if spec == "D":
            attrs[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(launch.kernel, signature, constants, attrs)


_ACCESS = re.compile(r"\b(ld|st)\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.[bfsu](\d+)\b")


def access_widths(ptx: str) -> dict[str, Counter]:
    """Bytes per global load and store instruction in ``ptx``, counted: ``{"ld": {16: 6, 4: 16}, ...}``."""
    widths: dict[str, Counter] = {"ld": Counter(), "st": Counter()}
    for kind, vector, bits in _ACCESS.findall(ptx):
        widths[kind][int(vector or 1) * int(bits) // 8] += 1
    return widths


def _resource_usage(cubin: bytes, workdir: Path) -> dict[str, int]:
    path = workdir / "kernel.cubin"
    path.write_bytes(cubin)
    tool = triton.knobs.nvidia.cuobjdump.path
    report = subprocess.run([tool, "-res-usage", str(path)], check=True, capture_output=True,
                            text=True).stdout
    return {key: int(value) for key, value in re.findall(r"\b(REG|LOCAL|SHARED|STACK):(\d+)", report)}


def programs_per_sm(sm: SM, warps: int, registers: int, shared_bytes: int) -> int:
    """Programs of ``warps`` warps resident on one SM at once."""
    per_warp = math.ceil(registers * 32 / sm.register_granule) * sm.register_granule
    by_registers = (sm.registers // per_warp) // warps
    by_shared = sm.shared_bytes // (shared_bytes + sm.reserved_shared_per_program)
    return min(sm.programs, sm.warps // warps, by_registers, by_shared)


def compiled_resources(launch: Launch, arch: int, workdir: Path) -> dict:
    """Registers, spills, shared memory, access widths and occupancy of ``launch`` compiled for ``arch``."""
    options = {"num_warps": 4, **launch.options}
    kernel = triton.compile(_source(launch), target=GPUTarget("cuda", arch, 32), options=options)
    usage = _resource_usage(kernel.asm["cubin"], workdir)
    shared = max(kernel.metadata.shared, usage.get("SHARED", 0))
    widths = access_widths(kernel.asm["ptx"])
    warps = options["num_warps"]
    resident = programs_per_sm(SMS.get(arch, SM()), warps, usage["REG"], shared)
    return {
        "registers": usage["REG"], "spill_bytes": usage.get("LOCAL", 0) + usage.get("STACK", 0),
        "shared_bytes": shared, "warps": warps,
        "loads": " ".join(f"{n}x{w}B" for w, n in sorted(widths["ld"].items(), reverse=True)),
        "stores": " ".join(f"{n}x{w}B" for w, n in sorted(widths["st"].items(), reverse=True)),
        "layout_conversions": kernel.asm["ttgir"].count("ttg.convert_layout"),
        # Per load site in the kernel's Triton GPU IR: a pipelined loop's loads become one
        # asynchronous copy to shared memory a stage, the others stay loads to registers.
        "direct_loads": kernel.asm["ttgir"].count("tt.load "),
        "async_copies": kernel.asm["ttgir"].count("ttg.async_copy_global_to_local"),
        "programs_per_sm": resident, "warps_per_sm": resident * warps,
    }


def _describe(launch: Launch) -> str:
    constants = [f"{p.name}={launch.values[p.name]}" for p in launch.kernel.params if p.is_constexpr]
    return " ".join(constants)


def kernel_rows(arch: int, workdir: Path, shapes: Sequence[Shape] = SHAPES,
                ops: Sequence[Op] = OPS) -> list[dict]:
    """One row per kernel launch of each of ``ops`` (default: every op of ``bench_kernels``) at each
    of ``shapes``."""
    rows, seen = [], {}
    meta = torch.device("meta")
    for shape in shapes:
        inputs = Inputs(shape, meta)
        for op in ops:
            with intercepted_launches() as launches:
                dispatch.implementation("triton", op.ours.__name__)(*op.args(inputs))
            for launch in launches:
                key = (_source(launch).hash(), tuple(sorted(launch.options.items())))
                if key not in seen:
                    seen[key] = compiled_resources(launch, arch, workdir)
                rows.append({"op": op.name, "shape": shape.label, "kernel": launch.kernel.__name__,
                             "grid": "x".join(map(str, launch.grid)), "constants": _describe(launch),
                             **seen[key]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    if dispatch.triton_interpreted():
        raise SystemExit("kernel_resources compiles for a GPU: unset TRITON_INTERPRET")
    with tempfile.TemporaryDirectory() as workdir:
        rows = kernel_rows(args.arch, Path(workdir))
    print(f"Triton {triton.__version__}, compiled for sm_{args.arch}")
    print_table(rows, ["op", "shape", "kernel", "constants", "warps", "registers", "spill_bytes",
                       "shared_bytes", "loads", "stores", "layout_conversions", "direct_loads",
                       "async_copies", "programs_per_sm", "warps_per_sm"])
    print("wrote", save_results(f"kernel_resources_sm{args.arch}", torch.device("cpu"), rows, args.out_dir))


if __name__ == "__main__":
    main()
