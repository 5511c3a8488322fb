"""Checks made both by the command line's validation and by a pipeline's ``generate``, written once.

The command line must refuse bad input without importing the pipelines, so these live outside
them. Each raises ``InputError`` naming the value as its caller spells it (``name``: a flag such
as ``--base_seed`` or an argument such as ``seed``).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

from wan_runtime.errors import InputError

if TYPE_CHECKING:
    import torch

    from wan_runtime.tasks import TaskSpec

# torch.Generator.manual_seed accepts seeds up to 2**64 - 1.
MAX_SEED = 2**64 - 1
# The official S2V DiT's position table holds 1024 latent frames, 4 video frames each: a clip of
# more frames fails there (an IndexError), so the official code allows at most 4096.
MAX_INFER_FRAMES = 4096
# So do the i2v and ti2v DiTs' tables: the first frame and 4 frames per latent frame after it.
MAX_FRAME_NUM = 1 + 4 * 1023
# And 1024 rows and columns of tokens.
MAX_TOKENS_A_SIDE = 1024
# Decoding in tiles: their size in pixels when asked for without one, and what sizes must divide
# (a quarter of the tile overlaps its neighbours, in whole latent pixels of either VAE).
DEFAULT_VAE_TILE = 512
VAE_TILE_MULTIPLE = 64
# load_pipeline's options that place the models without changing the GPU's numbers (fit_memory's).
PLACEMENT_FLAGS = ("offload_model", "t5_cpu", "stream_blocks")


def check_frame_num(frame_num: int, spec: TaskSpec, flag: str = "") -> int:
    """``frame_num`` must be ``4n + 1`` (n >= 0): the VAE packs 4 frames per latent after the
    first. The official pipelines also run with 1 frame (a single image). ``flag`` ("--" on the
    command line) prefixes the name in the error."""
    stride = spec.vae_stride[0]
    if not (is_int(frame_num) and 1 <= frame_num <= MAX_FRAME_NUM and (frame_num - 1) % stride == 0):
        below = max(1, (int(frame_num) - 1) // stride * stride + 1) if is_int(frame_num) else 1
        nearest = (f"{below} or {below + stride}" if below < MAX_FRAME_NUM else
                   f"{MAX_FRAME_NUM}, the most the official model's position tables (1024 latents) hold")
        raise InputError(f"{flag}frame_num must be {stride}n+1 from 1 to {MAX_FRAME_NUM} (1, 5, 9, ..., "
                         f"{spec.frame_num}), got {frame_num!r}; nearest valid: {nearest}")
    return int(frame_num)


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or NumPy); ``bool`` is not one here: True as a frame
    count or a seed is a caller's mistake."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_infer_frames(infer_frames: object, name: str) -> int:
    """s2v-14B's frames per clip: a multiple of 4 (the VAE's frames per latent) from 4 to
    ``MAX_INFER_FRAMES``."""
    if not is_int(infer_frames) or not 4 <= infer_frames <= MAX_INFER_FRAMES or infer_frames % 4:
        raise InputError(
            f"{name} must be a multiple of 4 from 4 to {MAX_INFER_FRAMES} (frames per clip, e.g. 48 or the "
            f"official default 80), got {infer_frames!r}"
        )
    return int(infer_frames)


def check_seed(seed: object, name: str) -> None:
    """A seed as the official code takes it: an integer up to ``MAX_SEED``, negative for a random one."""
    if not is_int(seed) or seed > MAX_SEED:
        raise InputError(f"{name} must be an integer at most 2**64 - 1 = {MAX_SEED} (negative: a random "
                         f"seed), got {seed!r}")


def check_switch(value: object, name: str) -> None:
    """An option that is on or off: ``True`` or ``False``, not a value that reads as one."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")


def check_num_clip(num_clip: object, name: str, optional: bool = True) -> None:
    """s2v-14B's clip count: positive, or (``optional``) None for as many clips as the audio needs."""
    if num_clip is None and optional:
        return
    if not is_int(num_clip) or num_clip < 1:
        none = " (or none given: as many as the audio needs)" if optional else ""
        raise InputError(f"{name} must be a positive number of clips{none}, got {num_clip!r}")


def check_clip_seeds(seed: int, clips: int, name: str) -> None:
    """Clip ``r`` is seeded with ``seed + r`` (as the official s2v pipeline): every one must be a
    valid seed."""
    if seed + clips - 1 > MAX_SEED:
        raise InputError(f"{name} {seed} is too large for {clips} clips (seeded seed + 0 ... seed + "
                         f"{clips - 1}): use a seed of at most 2**64 - {clips}")


def check_stream_blocks(stream_blocks: object, dit_fsdp: bool, flag: str = "") -> None:
    """How many DiT blocks stream from CPU memory: a count from 0, and not beside FSDP, which keeps
    a share of every block on each GPU instead (``flag`` prefixes the names: ``"--"``)."""
    if not is_int(stream_blocks) or stream_blocks < 0:
        raise InputError(f"{flag}stream_blocks must be a number of blocks from 0 (0: none stream), got "
                         f"{stream_blocks!r}")
    if stream_blocks and dit_fsdp:
        raise InputError(f"{flag}stream_blocks keeps blocks in CPU memory and {flag}dit_fsdp shards them "
                         "over the GPUs: choose one")


def check_dit_fp8(dit_fp8: bool, dit_fsdp: bool, flag: str = "") -> None:
    """Float8 DiT weights are not sharded: FSDP gathers and shards weights in the compute dtype
    (``flag`` prefixes the names: ``"--"``)."""
    if dit_fp8 and dit_fsdp:
        raise InputError(f"{flag}dit_fp8 and {flag}dit_fsdp do not combine: FSDP shards the DiT weights in "
                         "the compute dtype; choose one")


def check_cuda_graphs(
    device: torch.device, stream_blocks: int, dit_fsdp: bool, ulysses_size: int, flag: str = ""
) -> None:
    """The DiT's block stages replay as CUDA graphs on a CUDA ``device`` only, and only where no
    weight moves and no process exchanges anything while they run (``flag`` prefixes the names:
    ``"--"``)."""
    if device.type != "cuda":
        raise InputError(f"{flag}cuda_graphs needs a CUDA device, not {device.type}; run without it")
    check_graph_conflicts(stream_blocks, dit_fsdp, ulysses_size, flag)


def check_graph_conflicts(stream_blocks: int, dit_fsdp: bool, ulysses_size: int, flag: str = "") -> None:
    """Nothing moves the DiT's weights or exchanges its tokens while its blocks run, as CUDA graphs
    of them need (``check_cuda_graphs``, whatever the device)."""
    why = {"stream_blocks": "copies each streamed block's weights in as the blocks run",
           "dit_fsdp": "gathers each block's weights as the blocks run",
           "ulysses_size": "exchanges tokens between the processes inside every block"}
    on = {"stream_blocks": stream_blocks > 0, "dit_fsdp": dit_fsdp, "ulysses_size": ulysses_size > 1}
    for name, conflict in on.items():
        if conflict:
            raise InputError(f"{flag}cuda_graphs and {flag}{name} do not combine: {flag}{name} {why[name]}, "
                             "which a captured graph cannot; choose one")


def check_vae_tiling(vae_tiling: object, name: str) -> int:
    """The tile size in pixels ``vae_tiling`` asks for: 0 for whole frames (``False`` or 0),
    ``DEFAULT_VAE_TILE`` for ``True``, else the size given, a positive multiple of
    ``VAE_TILE_MULTIPLE``."""
    if vae_tiling is True:
        return DEFAULT_VAE_TILE
    if vae_tiling is False:
        return 0
    if not is_int(vae_tiling) or vae_tiling < 0 or vae_tiling % VAE_TILE_MULTIPLE:
        raise InputError(f"{name} must be a tile size in pixels, a multiple of {VAE_TILE_MULTIPLE} (e.g. "
                         f"{DEFAULT_VAE_TILE}; 0: whole frames), got {vae_tiling!r}")
    return int(vae_tiling)
