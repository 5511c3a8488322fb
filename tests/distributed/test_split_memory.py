"""Each process's activations under sequence parallelism (``--ulysses_size``): the meta device's
count with a planned split (``SequenceParallel.planned``) equals the count of the same work on
real tensors in each of two CPU processes (gloo), exchanges included; and a split pipeline's
estimate counts its share of the tokens."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.ranks import run_ranks
from tests.pipelines.test_activation_memory import BOTH_CACHES, float32_plan, real_peak
from wan_runtime.distributed.ulysses import SequenceParallel
from wan_runtime.pipelines import load_pipeline
from wan_runtime.pipelines.activation_memory import (
    StepCache,
    VideoShape,
    estimate_memory,
    s2v_step_work,
    step_work,
)
from wan_runtime.pipelines.live_bytes import LiveBytes, peak_bytes
from wan_runtime.tasks import task_spec

TI2V, I2V = ("ti2v-5B", ("DiT", "dit")), ("i2v-A14B", ("DiT high_noise", "high_noise"))
# name: (task, the DiT's name in the plan and in the pipeline, the work, its arguments, its cache).
CASES = {
    "ti2v per-token, 45 tokens padded to 46": (*TI2V, step_work, ((48, 3, 6, 10), 2, True), None),
    "ti2v with both caches": (*TI2V, step_work, ((48, 3, 6, 10), 2, False), StepCache(BOTH_CACHES, "ti2v")),
    "i2v, two branches": (*I2V, step_work, ((16, 3, 8, 8), 2, False), None),
    "s2v with motion, audio injected on the whole sequence": (
        "s2v-14B", ("DiT", "dit"), s2v_step_work,
        ((16, 2, 8, 8), 8, 2, True, False, (9, 64, 64, torch.float32), (9, 3)), None),
}


def _counts_as_planned(rank: int, roots: dict[str, str], planned: dict[str, list[int]]) -> None:
    pipelines = {}
    for name, (task, (_, dit), work, args, cache) in CASES.items():
        if task not in pipelines:
            pipelines[task] = load_pipeline(task, roots[task], device="cpu", dtype=torch.float32,
                                            ulysses_size=2)
            if task == "s2v-14B":
                pipelines[task].motion_frames = (9, 3)
        assert real_peak(work, pipelines[task].dits[dit], *args, cache=cache) == planned[name][rank], name
    if rank == 0:  # the split pipeline's estimate: the same stages, the DiT's with half the tokens,
        # the VAE's with half the rows (of each tile)
        for tiling in (512, 0):
            several = pipelines["ti2v-5B"].estimate_memory(size="1280*704", frame_num=9, vae_tiling=tiling)
            one = estimate_memory(float32_plan("ti2v-5B", roots["ti2v-5B"]), task_spec("ti2v-5B"),
                                  VideoShape(1280, 704, 9, False, 5.0, tiling))
            for mine, whole in zip(several.stages, one.stages, strict=True):
                if mine.stage in ("denoise", "vae_decode"):
                    # More than half: the tiny DiT's text context, whole in each process, weighs
                    # much; the decode gathers the whole video in each.
                    assert mine._replace(activations=0) == whole._replace(activations=0)
                    assert 0.5 * whole.activations < mine.activations < whole.activations
                else:
                    assert mine == whole


def test_each_processs_share_of_a_step_is_counted_as_it_runs(ti2v_root, i2v_root, s2v_root):
    roots = {"ti2v-5B": str(ti2v_root), "i2v-A14B": str(i2v_root), "s2v-14B": str(s2v_root)}
    planned = {}
    for name, (task, (label, _), work, args, cache) in CASES.items():
        counts = []
        for rank in range(2):
            dit = float32_plan(task, roots[task]).meta_models[label]
            dit.enable_sequence_parallel(SequenceParallel.planned(2, rank))
            counts.append(peak_bytes(work, dit, *args, cache=cache))
        planned[name] = counts
    run_ranks(_counts_as_planned, 2, roots, planned)


def _exchange_counts(shard, x: torch.Tensor) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Each exchange of ``shard`` on ``x`` [B, local, H, D]: its peak count and its result's shape."""
    # to_tokens' input is made before its count: gloo's worker thread may hold the input of the
    # exchange that made it a moment after that exchange returned, which a plan cannot know.
    heads = shard.to_heads(x)[0]
    exchanges = {"gather": lambda: shard.gather(x), "to_heads": lambda: shard.to_heads(x, x, x)[0],
                 "to_tokens": lambda: shard.to_tokens(heads)}
    counts = {}
    for name, exchange in exchanges.items():
        with torch.inference_mode(), LiveBytes() as counter:
            shape = tuple(exchange().shape)
        counts[name] = (counter.peak, shape)
    return counts


def _exchanges_as_planned(rank: int, planned: dict) -> None:
    shard = SequenceParallel.over().shard(45)
    for batch, counts in planned.items():
        got = _exchange_counts(shard, torch.randn(batch, shard.local, 4, 8))
        assert got == counts, (batch, got, counts)


def test_a_planned_splits_exchanges_make_what_the_collectives_make():
    shard = SequenceParallel.planned(2).shard(45)
    planned = {batch: _exchange_counts(shard, torch.empty(batch, shard.local, 4, 8, device="meta"))
               for batch in (1, 2)}
    run_ranks(_exchanges_as_planned, 2, planned)


def test_a_planned_split_counts_and_computes_nothing():
    with pytest.raises(ValueError, match="a split over 2 processes has no rank 2"):
        SequenceParallel.planned(2, 2)
    shard = SequenceParallel.planned(2).shard(45)
    for exchange in (shard.gather, shard.to_heads):
        with pytest.raises(RuntimeError, match=r"a planned split of a sequence \(SequenceParallel.planned\)"):
            exchange(torch.zeros(1, shard.local, 4, 8))
