"""The Wan2.2 diffusion transformer (DiT) of the i2v-A14B experts and ti2v-5B.

A forward is three stages with tensor inputs and outputs, so a step cache can sit between the
first block and the rest, and each stage can be captured as a CUDA graph:

    prepare   patch, text and time embeddings, RoPE tables
    blocks    ``run_blocks(tokens, cond, start, stop)``
    finish    head and unpatchify
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule

from wan_runtime.checks import check_graph_conflicts
from wan_runtime.distributed.sharding import Sharding, shard_module
from wan_runtime.distributed.ulysses import SequenceParallel, SequenceShard
from wan_runtime.errors import InputError
from wan_runtime.lora import LoraFile, WeightUpdates
from wan_runtime.models.block_streaming import BlockStreaming
from wan_runtime.models.cuda_graphs import StageGraphs
from wan_runtime.models.dit_blocks import AffineLayerNorm, DiTBlock, Head, RMSNorm, linear_float32
from wan_runtime.models.dit_config import DiTConfig, config_from_checkpoint, read_config_json
from wan_runtime.models.fp8_weights import FP8, Fp8Linear, store_linears_in_fp8
from wan_runtime.models.rope import rope_tables
from wan_runtime.models.safetensors_checkpoint import (
    TensorEntry,
    check_keys,
    checkpoint_files,
    load_parameters,
    read_entries,
)
from wan_runtime.parallel_checks import check_heads_split


def _weight_updates(
    model: nn.Module, loras: Sequence[tuple[LoraFile, float]], label: str
) -> WeightUpdates | None:
    if not loras:
        return None
    return WeightUpdates(loras, {name: tuple(p.shape) for name, p in model.named_parameters()}, label)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] timesteps -> [N, dim] ``[cos, sin]`` features in float64, frequencies ``10000^(-i/half)``."""
    half = dim // 2
    freqs = torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=t.device).div(half))
    angles = torch.outer(t.to(torch.float64), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class Conditioning(NamedTuple):
    """Everything a block needs besides the tokens; built once per forward by ``prepare``."""

    time: torch.Tensor  # [K, 6, dim] float32 block modulation, one row per timestep value
    time_embed: torch.Tensor  # [K, dim] float32, for the head
    time_index: torch.Tensor | None  # [B, L] row of each token, or None: row b is sample b
    context: torch.Tensor  # [B, text_len, dim]
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin [L, 1, head_dim/2]
    grid: tuple[int, int, int]  # tokens along frames, rows, columns
    # Under sequence parallelism: the sequence's split; tokens, time_index and rope are then this
    # rank's slices (L = shard.local).
    shard: SequenceShard | None = None


class WanModel(nn.Module):
    """Wan DiT with the official parameter names; see ``from_pretrained``."""

    # What callers run directly under FSDP besides ``forward``: the model's methods, a block's.
    FSDP_ENTRY_POINTS = (("prepare", "run_blocks", "finish", "embed_timesteps"), ("modulated_norm",))

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, c.dim * 6))
        self.blocks = nn.ModuleList(
            DiTBlock(c.dim, c.ffn_dim, c.num_heads, c.qk_norm, c.cross_attn_norm, c.eps)
            for _ in range(c.num_layers)
        )
        self.head = Head(c.dim, c.out_dim, c.patch_size, c.eps)
        # Set by ``compilation.compile_blocks``: a numerical failure's advice names compile only
        # for a run that used it.
        self.blocks_compiled = False
        # Set by ``store_weights_in_fp8``, for the same reason.
        self.weights_fp8 = False
        # Set by ``from_pretrained``: the parameters its LoRAs changed (none at strength 0).
        self.lora_changes = 0
        # Set by ``enable_sequence_parallel`` and ``enable_block_streaming``.
        self.sequence_parallel: SequenceParallel | None = None
        self.block_streaming: BlockStreaming | None = None
        # Set by ``enable_cuda_graphs``.
        self.stage_graphs: StageGraphs | None = None
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        convert_model_dtype: bool = False,
        loras: Sequence[tuple[LoraFile, float]] = (),
        label: str = "",
        merge_device: torch.device | str | None = None,
        fp8: bool = False,
        host_blocks: int = 0,
        fsdp_device: torch.device | None = None,
    ) -> WanModel:
        """Load an official DiT folder (``config.json`` + single or sharded safetensors).

        ``dtype`` is the compute dtype of the matrix weights (default float32); norm, modulation,
        time-embedding and head weights stay float32 as in the official autocast flow, unless
        ``convert_model_dtype`` casts them too, as the official flag of that name does (the
        official model then rounds those weights to ``dtype`` but still computes in float32 where
        it did). Weights are read one tensor at a time into a model built on the meta device.
        ``loras``: ``(LoRA file, strength)`` pairs merged into the weights as they load
        (``wan_runtime.lora``; ``label`` names this DiT in their errors), the products computed
        on ``merge_device`` (default ``device``: a GPU is worth it when the weights load to the
        CPU, for offloading). ``fp8``: the linear layers of ``fp8_modules`` store their
        weights in float8, each quantized on ``merge_device`` once its LoRA changes are in, and compute in
        ``dtype`` (``wan_runtime.models.fp8_weights``; lossy). ``host_blocks``: the blocks that
        ``enable_block_streaming(host_blocks, ...)`` streams (give it the same count) load into CPU
        memory, the rest onto ``device``, so that no weight passes through CPU memory that does not
        stay there. ``fsdp_device``: shard the weights over the process group onto it as
        ``enable_fsdp`` does, each block as soon as it has loaded, so that a process holds a block
        or two whole at a time (besides the embeddings and head), not the whole DiT: loaded
        straight onto the GPU, a DiT larger than one GPU shards onto several.
        """
        model, entries = cls._meta_model(Path(path))
        updates = _weight_updates(model, loras, label or str(path))
        model.set_compute_dtype(dtype or torch.float32, keep_float32=not convert_model_dtype)
        if fp8:
            model.store_weights_in_fp8()
        host = tuple(f"blocks.{i}." for i in model.streamed_indices(host_blocks))
        sharding = None if fsdp_device is None else Sharding(fsdp_device, *cls.FSDP_ENTRY_POINTS)
        shard_each = {} if sharding is None else {
            f"blocks.{i}.": partial(sharding.block, block) for i, block in enumerate(model.blocks)}
        load_parameters(model, entries, device or "cpu", updates, merge_device, host, shard_each)
        if sharding is not None:
            sharding.root(model)
        model.lora_changes = 0 if updates is None else len(updates)
        return model.eval().requires_grad_(False)

    @classmethod
    def check_pretrained(
        cls, path: str | Path, loras: Sequence[tuple[LoraFile, float]] = (), label: str = ""
    ) -> DiTConfig:
        """Check an official DiT folder as ``from_pretrained`` would, without reading a weight:
        ``config.json``, the index and shards, every safetensors header, and every tensor's name
        and shape against the model the config describes (``CheckpointError``), and that
        ``loras`` fit it (``InputError``); returns that config. Cheap, so a pipeline runs it on
        every DiT before loading anything."""
        model = cls._meta_model(Path(path))[0]
        _weight_updates(model, loras, label or str(path))
        return model.config

    @classmethod
    def _meta_model(cls, folder: Path) -> tuple[WanModel, dict[str, TensorEntry]]:
        """The model of ``folder``'s config on the meta device, checked against its tensors."""
        config, entries = cls.read_checkpoint(folder)
        with torch.device("meta"):
            model = cls(config)
        check_keys(model, entries, folder)
        return model, entries

    @classmethod
    def read_checkpoint(cls, folder: Path) -> tuple[DiTConfig, dict[str, TensorEntry]]:
        """The folder's architecture (``config.json`` and tensor shapes) and where each tensor lives."""
        raw = read_config_json(folder / "config.json")
        entries = read_entries(checkpoint_files(folder))
        return config_from_checkpoint(raw, {k: e.shape for k, e in entries.items()}, folder), entries

    def enable_sequence_parallel(self, parallel: SequenceParallel) -> WanModel:
        """Split every forward's tokens over ``parallel``'s ranks (Ulysses): each rank computes its
        slice of the tokens and ``num_heads / world`` heads of self-attention, and every rank
        returns the whole output. Every rank must call the forward with the same inputs."""
        check_heads_split(self.config.num_heads, parallel.world)
        self._refuse_under_graphs(ulysses_size=parallel.world)
        self.sequence_parallel = parallel
        return self

    def enable_block_streaming(self, count: int, device: torch.device) -> WanModel:
        """Keep the last ``count`` blocks (all but the first if ``count`` reaches their number) in
        CPU memory, each copied to ``device`` for its own forward (``BlockStreaming``); the rest
        of the model is what ``resident_modules`` holds. The first block stays: TeaCache reads its
        modulation outside a forward. Call it with those blocks on the CPU (``from_pretrained``'s
        ``host_blocks``)."""
        indices = self.streamed_indices(count)
        self._refuse_under_graphs(stream_blocks=len(indices))
        self.block_streaming = BlockStreaming(self.blocks, indices, device) if indices else None
        return self

    def enable_cuda_graphs(self, graphs: StageGraphs) -> WanModel:
        """Run the block stages from CUDA graphs kept in ``graphs`` (``wan_runtime.models.cuda_graphs``;
        not with streamed blocks, FSDP or sequence parallelism: ``check_graph_conflicts``)."""
        streamed = 0 if self.block_streaming is None else len(self.block_streaming.indices)
        parallel = 1 if self.sequence_parallel is None else self.sequence_parallel.world
        check_graph_conflicts(streamed, isinstance(self, FSDPModule), parallel)
        self.stage_graphs = graphs
        return self

    def _refuse_under_graphs(
        self, stream_blocks: int = 0, dit_fsdp: bool = False, ulysses_size: int = 1
    ) -> None:
        """``check_graph_conflicts`` of what is being enabled, where the blocks replay from graphs."""
        if self.stage_graphs is not None:
            check_graph_conflicts(stream_blocks, dit_fsdp, ulysses_size)

    def streamed_indices(self, count: int) -> range:
        """The blocks ``enable_block_streaming(count)`` streams: the last ``count``, all but the
        first at most."""
        count = min(count, len(self.blocks) - 1)
        return range(len(self.blocks) - count, len(self.blocks))

    def resident_modules(self) -> nn.Module:
        """What of the model moves to where it runs: all of it, but the streamed blocks."""
        if self.block_streaming is None:
            return self
        streamed = set(self.block_streaming.indices)
        kept = [module for name, module in self.named_children() if name != "blocks"]
        return nn.ModuleList(kept + [b for i, b in enumerate(self.blocks) if i not in streamed])

    def enable_fsdp(self, device: torch.device) -> WanModel:
        """Shard the weights over every process of the process group (FSDP), onto ``device``: one
        unit per block, gathered as it runs, and one for the embeddings and head."""
        self._refuse_under_graphs(dit_fsdp=True)
        return shard_module(self, self.blocks, device, *self.FSDP_ENTRY_POINTS)

    def float32_parameters(self) -> list[nn.Parameter]:
        """Parameters the official model applies in float32 whatever the compute dtype."""
        norms = (m for m in self.modules() if isinstance(m, (RMSNorm, AffineLayerNorm)))
        kept = [p for m in norms for p in m.parameters()]
        kept += [*self.time_embedding.parameters(), *self.time_projection.parameters()]
        kept += [*self.head.parameters()]
        kept += [block.modulation for block in self.blocks]
        return kept

    def fp8_modules(self) -> list[nn.Module]:
        """The modules whose linear layers store float8 weights when loaded with ``fp8``: the
        blocks, which hold almost all the weights and compute in the compute dtype."""
        return [self.blocks]

    def store_weights_in_fp8(self) -> WanModel:
        """Store the weights of the linear layers of ``fp8_modules`` in float8, quantized from
        their values (``wan_runtime.models.fp8_weights``); they compute in the dtype they had."""
        for module in self.fp8_modules():
            store_linears_in_fp8(module)
        self.weights_fp8 = True
        return self

    def set_compute_dtype(self, dtype: torch.dtype, keep_float32: bool = True) -> WanModel:
        """Cast the weights to ``dtype``, but ``float32_parameters`` when ``keep_float32``; float8
        weights stay float8 and compute in ``dtype``. Each weight is cast once from its value,
        so a float32 model keeps its float32 islands exact."""
        kept = {id(param) for param in self.float32_parameters()} if keep_float32 else set()
        for module in self.modules():
            if isinstance(module, Fp8Linear):
                module.compute_dtype = dtype
        for param in self.parameters():
            if param.dtype != FP8:
                param.data = param.data.to(torch.float32 if id(param) in kept else dtype)
        return self

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow for latents ``x`` [B, C_in, F, H, W] at timesteps ``t``.

        ``t`` is [B] or [B, L] (one per token, L = number of patches); ``context`` is
        [B, L_text, text_dim] with L_text <= text_len; ``y`` [B, C_y, F, H, W] is the i2v
        conditioning, concatenated on channels. Returns [B, out_dim, F, H, W] float32.
        """
        tokens, cond = self.prepare(x, t, context, y)
        tokens = self.run_blocks(tokens, cond)
        return self.finish(tokens, cond)

    def prepare(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Conditioning]:
        """Embed patches, text and timesteps; returns tokens [B, L, dim] and the conditioning."""
        self._check_inputs(x, t, context, y)
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        weight = self.patch_embedding.weight
        patches = F.conv3d(
            x.to(weight.dtype), weight, self.patch_embedding.bias, stride=self.config.patch_size
        )
        grid = tuple(patches.shape[2:])
        # Channel-contiguous tokens, as the blocks' fused ops read whole rows.
        tokens = patches.flatten(2).transpose(1, 2).contiguous()
        time_embed, time_index = self._embed_time(t)
        time = linear_float32(self.time_projection[1], F.silu(time_embed)).unflatten(1, (6, self.config.dim))
        rope = self._rope(grid, tokens.device)
        tokens, time_index, rope, shard = self._split_sequence(tokens, time_index, rope)
        return tokens, Conditioning(
            time=time,
            time_embed=time_embed,
            time_index=time_index,
            context=self._embed_text(context),
            rope=rope,
            grid=grid,
            shard=shard,
        )

    def run_blocks(
        self, tokens: torch.Tensor, cond: Conditioning, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Run ``blocks[start:stop]`` on tokens [B, L, dim]; from a CUDA graph after
        ``enable_cuda_graphs``."""
        if self.stage_graphs is None:
            return self._run_blocks_eagerly(tokens, cond, start, stop)
        return self.stage_graphs.run(self, ("blocks", start, stop),
                                     partial(self._run_blocks_eagerly, start=start, stop=stop), tokens, cond)

    def _run_blocks_eagerly(
        self, tokens: torch.Tensor, cond: Conditioning, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        for index in range(len(self.blocks))[start:stop]:
            tokens = self.run_block(index, tokens, cond)
        return tokens

    def run_block(self, index: int, tokens: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Block ``index`` on tokens [B, L, dim], its weights brought in first if it is streamed."""
        streaming = self.block_streaming
        with nullcontext() if streaming is None else streaming.on_device(index):
            return self.blocks[index](tokens, cond.time, cond.time_index, cond.context, cond.rope, cond.shard)

    def finish(self, tokens: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Head and unpatchify: tokens [B, L, dim] -> [B, out_dim, F, H, W] float32."""
        out = self.head(tokens, cond.time_embed, cond.time_index)
        if cond.shard is not None:
            out = cond.shard.gather(out)
        return self._unpatchify(out, cond.grid)

    def _unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """The head's output [B, L, prod(patch) * out_dim] of a (F, H, W) token grid ->
        [B, out_dim, F*p, H*q, W*r] float32."""
        f, h, w = grid
        p, q, r = self.config.patch_size
        out = out.view(out.size(0), f, h, w, p, q, r, self.config.out_dim)
        return out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(
            out.size(0), self.config.out_dim, f * p, h * q, w * r
        ).float()

    def _split_sequence(
        self, tokens: torch.Tensor, time_index: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor], SequenceShard | None]:
        """Under sequence parallelism, this rank's slices of ``tokens`` [B, L, dim], of their
        timestep rows and rope tables, and the split; else all as given, and None."""
        if self.sequence_parallel is None:
            return tokens, time_index, rope, None
        shard = self.sequence_parallel.shard(tokens.size(1))
        time_index = None if time_index is None else shard.split(time_index)
        return shard.split(tokens), time_index, tuple(shard.split(table, dim=0) for table in rope), shard

    def embed_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Time embedding [N, dim] float32 of timestep values ``t`` [N] (TeaCache's ``poly`` signal,
        which a step cache plans from before sampling)."""
        return self._embed_time(t)[0]

    def _embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The MLP runs once per distinct timestep value, not once per token as the official model
        # does: a per-token timestep tensor holds at most a few values.
        if t.dim() == 1:
            values, index = t, None
        else:
            values, index = torch.unique(t, return_inverse=True)
        first, _, second = self.time_embedding
        features = sinusoidal_embedding(values.to(first.weight.device), self.config.freq_dim)
        return linear_float32(second, F.silu(linear_float32(first, features))), index

    def _embed_text(self, context: torch.Tensor) -> torch.Tensor:
        # Zero-padded to text_len: the official cross-attention attends to the padded positions.
        padded = F.pad(context, (0, 0, 0, self.config.text_len - context.size(1)))
        return self.text_embedding(padded.to(self.text_embedding[0].weight.dtype))

    def forget_rope_tables(self) -> None:
        """Drop the rope tables cached per token grid and device; the next forward makes its own
        again (what a memory estimate of a run's first step counts)."""
        self._rope_cache.clear()

    def _rope(self, grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (grid, str(device))
        if key not in self._rope_cache:
            self._rope_cache[key] = rope_tables(grid, self.config.head_dim, device)
        return self._rope_cache[key]

    def _check_inputs(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None
    ) -> None:
        c = self.config
        if x.dim() != 5:
            raise InputError(f"x must be [B, C, F, H, W] latents, got shape {list(x.shape)}")
        b, _, *sizes = x.shape
        channels = x.size(1) + (0 if y is None else y.size(1))
        if channels != c.in_dim:
            hint = " (i2v models take the image conditioning as y)" if y is None else ""
            raise InputError(f"x and y carry {channels} channels, the model takes {c.in_dim}{hint}")
        if y is not None and (y.shape[0] != b or list(y.shape[2:]) != sizes):
            raise InputError(f"y has shape {list(y.shape)}, it must match x {list(x.shape)} but for channels")
        if any(size % patch for size, patch in zip(sizes, c.patch_size, strict=True)):
            raise InputError(f"latent size {sizes} is not a multiple of the patch size {list(c.patch_size)}")
        tokens = sizes[0] // c.patch_size[0] * (sizes[1] // c.patch_size[1]) * (sizes[2] // c.patch_size[2])
        if list(t.shape) not in ([b], [b, tokens]):
            raise InputError(f"t must be [{b}] or [{b}, {tokens}] (one per token), got {list(t.shape)}")
        if context.dim() != 3 or context.size(0) != b or context.size(2) != c.text_dim:
            raise InputError(f"context must be [{b}, L, {c.text_dim}], got {list(context.shape)}")
        if context.size(1) > c.text_len:
            raise InputError(f"context has {context.size(1)} tokens, at most text_len={c.text_len} fit")
