"""On a GPU (skipped without one): the DiT split and sharded in a process group of one NCCL
process, as a lent machine has one GPU. What the CPU tests cannot show: FSDP's shards, loaded on
the CPU or straight onto the GPU block by block, land on the GPU, and the exchanges run as NCCL
functional collectives."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.dit_inputs import CASES, dit_inputs
from tests.distributed.ranks import run_ranks
from tests.tolerances import PARALLEL_VS_ONE_PROCESS_BF16, PARALLEL_VS_ONE_PROCESS_FP32, rel_l2
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.models import WanModel
from wan_runtime.tiny_checkpoints import TINY_I2V, random_dit, write_dit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _on_the_gpu(rank: int) -> None:
    device = torch.device("cuda", rank)
    for name, (config, grid, per_token) in CASES.items():
        one = random_dit(config, seed=0).to(device)
        split = random_dit(config, seed=0).enable_fsdp(device)
        split.enable_sequence_parallel(SequenceParallel.over())
        assert all(p.device == device for p in split.parameters()), name
        inputs = [None if x is None else x.to(device) for x in dit_inputs(config, grid, per_token)]
        # Not inference_mode: in a group of one, FSDP uses its shard as the whole weight and asks
        # for a version counter, which inference tensors lack (larger groups gather, and run
        # under inference_mode in tests/distributed on the CPU and in the pipelines).
        with torch.no_grad():
            assert rel_l2(split(*inputs), one(*inputs)) <= PARALLEL_VS_ONE_PROCESS_FP32, name


def test_split_and_sharded_dit_on_the_gpu():
    run_ranks(_on_the_gpu, 1, backend="nccl")


def _loaded_onto_the_gpu(rank: int, folder: str) -> None:
    device = torch.device("cuda", rank)
    loaded = WanModel.from_pretrained(folder, dtype=torch.bfloat16, convert_model_dtype=True, device=device,
                                      fsdp_device=device)
    whole = WanModel.from_pretrained(folder, dtype=torch.bfloat16, convert_model_dtype=True, device=device)
    assert all(p.device == device for p in loaded.parameters())
    inputs = [None if x is None else x.to(device) for x in dit_inputs(TINY_I2V, (3, 6, 10), False)]
    with torch.no_grad():
        assert rel_l2(loaded(*inputs), whole(*inputs)) <= PARALLEL_VS_ONE_PROCESS_BF16


def test_a_dit_loads_onto_the_gpu_sharded_block_by_block(tmp_path):
    folder = write_dit(tmp_path / "dit", TINY_I2V, seed=1, shards=3)
    run_ranks(_loaded_onto_the_gpu, 1, str(folder), backend="nccl")
