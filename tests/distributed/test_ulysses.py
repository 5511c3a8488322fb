"""Ulysses sequence parallelism over CPU processes (gloo): the exchanges' layout, and the DiT
forward split over two processes bitwise equal to one process's."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tests.distributed.dit_inputs import CASES, dit_inputs
from tests.distributed.ranks import run_ranks
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.errors import InputError
from wan_runtime.tiny_checkpoints import TINY_TI2V, random_dit

LENGTH, HEADS = 7, 6


def _exchanges(rank: int) -> None:
    shard = SequenceParallel.over().shard(LENGTH)
    world = shard.parallel.world
    whole = torch.arange(LENGTH * HEADS * 2, dtype=torch.float32).view(1, LENGTH, HEADS, 2) + 1
    padded = F.pad(whole, (0, 0, 0, 0, 0, shard.padded - LENGTH))
    mine = shard.split(whole)
    assert torch.equal(mine, padded[:, rank * shard.local:(rank + 1) * shard.local])
    heads = HEADS // world
    q, k = shard.to_heads(mine, 2 * mine)
    assert torch.equal(q, padded[:, :, rank * heads:(rank + 1) * heads])
    assert torch.equal(k, 2 * q)
    assert torch.equal(shard.to_tokens(q), mine)
    assert torch.equal(shard.real_keys(q), q[:, :LENGTH])
    assert torch.equal(shard.gather(mine), whole)
    for stride in (1, 3):
        parts = [None] * world
        dist.all_gather_object(parts, shard.real_rows(mine.flatten(2), stride))
        assert torch.equal(torch.cat(parts, dim=1), whole.flatten(2)[:, ::stride])


@pytest.mark.parametrize("world", [2, 3])
def test_exchanges_move_slices_and_heads_to_their_ranks(world):
    """7 tokens over 2 ranks (4 + 3 and a padded one) and 3 (3 + 3 + 1 and two padded): each
    rank's slice, its heads of every token, the way back, the gather without the padding, and
    every 3rd token of the whole sequence from the ranks' real tokens."""
    run_ranks(_exchanges, world)


def _split_forward(rank: int) -> None:
    for config, grid, per_token in CASES.values():
        one = random_dit(config, seed=0)
        split = random_dit(config, seed=0).enable_sequence_parallel(SequenceParallel.over())
        with torch.inference_mode():
            expected = one(*dit_inputs(config, grid, per_token))
            out = split(*dit_inputs(config, grid, per_token))
        assert torch.equal(out, expected), (config.model_type, grid)


def test_split_forward_is_bitwise_the_single_process_one():
    """Float32 on the CPU: every token's arithmetic is the same, and attention over all tokens of
    a head is the same whichever rank holds the head, so the outputs agree to the bit."""
    run_ranks(_split_forward, 2)


def test_heads_must_split_evenly():
    model = random_dit(TINY_TI2V)
    with pytest.raises(InputError, match="ulysses_size 3 does not divide the DiT.s 2 attention heads"):
        model.enable_sequence_parallel(SequenceParallel(group=None, world=3, rank=0))
