"""FSDP sharding of the DiT over two CPU processes (gloo): each process holds half the weights,
and the forward and every stage a caller runs directly match the unsharded model's to the bit."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.dit_inputs import CASES, dit_inputs
from tests.distributed.ranks import run_ranks
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.errors import InputError
from wan_runtime.models import WanModel
from wan_runtime.models.cuda_graphs import RerunBackend, StageGraphs
from wan_runtime.tiny_checkpoints import TINY_I2V, random_dit, write_dit

CPU = torch.device("cpu")


def _sharded(rank: int) -> None:
    for name, (config, grid, per_token) in CASES.items():
        one = random_dit(config, seed=0)
        sharded = random_dit(config, seed=0).enable_fsdp(CPU)
        with pytest.raises(InputError, match="cuda_graphs and dit_fsdp do not combine"):
            sharded.enable_cuda_graphs(StageGraphs(RerunBackend()))
        held = sum(p.to_local().numel() for p in sharded.parameters())
        assert held < 0.55 * sum(p.numel() for p in one.parameters()), name
        if "16 tokens" in name:  # both at once
            sharded.enable_sequence_parallel(SequenceParallel.over())
        inputs = dit_inputs(config, grid, per_token)
        with torch.inference_mode():
            expected = one(*inputs)
            assert torch.equal(sharded(*inputs), expected), name
            # The stages the step cache runs one by one.
            tokens, cond = sharded.prepare(*inputs)
            first = sharded.run_blocks(tokens, cond, 0, 1)
            assert torch.equal(sharded.finish(sharded.run_blocks(first, cond, 1), cond), expected), name
            one_tokens, one_cond = one.prepare(*inputs)
            signal = sharded.blocks[0].modulated_norm(tokens, cond.time, cond.time_index)
            want = one.blocks[0].modulated_norm(one_tokens, one_cond.time, one_cond.time_index)
            assert torch.equal(signal, want if cond.shard is None else cond.shard.split(want)), name
            t = torch.tensor([500.0], dtype=torch.float64)
            assert torch.equal(sharded.embed_timesteps(t), one.embed_timesteps(t)), name


def test_sharded_dit_matches_the_whole_one():
    run_ranks(_sharded, 2)


def _sharded_as_it_loads(rank: int, folder: str) -> None:
    loaded = WanModel.from_pretrained(folder, dtype=torch.bfloat16, convert_model_dtype=True, fsdp_device=CPU)
    whole = WanModel.from_pretrained(folder, dtype=torch.bfloat16, convert_model_dtype=True)
    after = WanModel.from_pretrained(folder, dtype=torch.bfloat16, convert_model_dtype=True).enable_fsdp(CPU)
    for (name, shard), (_, want) in zip(loaded.named_parameters(), after.named_parameters(), strict=True):
        assert torch.equal(shard.to_local(), want.to_local()), name
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    inputs = dit_inputs(TINY_I2V, (3, 6, 10), False)
    with torch.inference_mode():
        assert torch.equal(loaded(*inputs), whole(*inputs))


def test_a_dit_sharded_block_by_block_as_it_loads_is_the_one_sharded_after(tmp_path):
    """In a checkpoint of three files, so that blocks are split between two."""
    folder = write_dit(tmp_path / "dit", TINY_I2V, seed=1, shards=3)
    run_ranks(_sharded_as_it_loads, 2, str(folder))
