"""``torch.compile`` of a DiT's transformer blocks (regional compilation).

The blocks hold nearly all of a forward's work and are all alike, so each block is compiled on
its own rather than the whole forward: the blocks share one compiled function, whose graphs every
block of every expert replays, the parameters being graph inputs. The stages around the blocks
stay eager: they hold the step cache's host decision between block 0 and the rest, and per-size
tables built once.

A graph serves one kind of input: per-sample or per-token timesteps, the parameters' dtype, and
the input's dtype (in bfloat16, block 0 takes the patch embedding in the compute dtype and the
other blocks the float32 residual stream, so a bfloat16 run compiles two). Shapes are left to
Dynamo's automatic dynamic shapes: the first video size compiles graphs with static shapes, and
a second size compiles once more with the token count symbolic, graphs that then serve every size.

No graph break is expected (the tests assert none); one, e.g. from an attention library that is
not a torch custom op, runs that part eagerly instead of failing the run.
"""

from __future__ import annotations

import torch
from torch import nn

from wan_runtime.errors import InputError

# Triton, in which Inductor writes a GPU's kernels, has float8_e4m3fn from compute capability 8.9
# (Ada, Hopper) on; below it, compiled blocks cannot read float8 weights.
FP8_MIN_CAPABILITY = (8, 9)
# The graphs one process may need: input kinds x dtypes x (static, symbolic) sizes x model widths
# pass Dynamo's default limit of 8, past which the blocks would silently run eagerly.
RECOMPILE_LIMIT = 64


def check_compile_support(device: torch.device) -> None:
    """Raise ``InputError`` if ``torch.compile`` cannot generate code for ``device`` here: Inductor
    needs Triton for CUDA tensors and a C++ compiler for CPU tensors."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise InputError("compile needs Triton for CUDA, which this torch cannot import; "
                             "install the triton build that matches torch, or run without compile")
        return
    if device.type != "cpu":
        raise InputError(f"compile runs on cuda or cpu devices, not {device.type}; run without compile")
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except RuntimeError as err:  # Inductor's InvalidCxxCompiler
        raise InputError(f"compile on the CPU needs a C++ compiler ({err}); install g++ or clang++, "
                         "or run without compile") from err


def check_fp8_compile_support(device: torch.device) -> None:
    """Raise ``InputError`` if compiled blocks cannot read float8 weights on ``device``."""
    if device.type != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise InputError(
            "compile with dit_fp8 needs a GPU of compute capability 8.9 or newer (Ada, Hopper or later): "
            f"Triton, which compiled blocks run on, has no float8 on this {capability[0]}.{capability[1]} "
            "GPU; run without one of them"
        )


def compile_blocks(model: nn.Module) -> nn.Module:
    """Compile each of ``model.blocks`` in place (``nn.Module.compile``) and set
    ``model.blocks_compiled``; returns ``model``.

    Raises Dynamo's recompile limit, a process-wide setting, to at least ``RECOMPILE_LIMIT``. The
    first forward pays the compile time, and once more the first forward at a second size; later
    forwards, in either CFG branch and with either expert, reuse the code.
    """
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    for block in model.blocks:
        block.compile()
    model.blocks_compiled = True
    return model
