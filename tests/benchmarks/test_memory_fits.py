"""``memory_fits``: the placements chosen for the release video on each card size hold together,
on one GPU and on each of several."""

from __future__ import annotations

import pytest

from benchmarks import memory_fits, weight_plans
from wan_runtime.checks import PLACEMENT_FLAGS
from wan_runtime.errors import InputError
from wan_runtime.pipelines.host_memory import host_plan
from wan_runtime.pipelines.memory_fit import placements
from wan_runtime.pipelines.memory_plan import _GIB


@pytest.fixture(scope="module")
def named() -> dict[str, tuple]:
    """ti2v-5B's placements by the names the rows give them, fastest first."""
    every = placements(weight_plans.release_plan("ti2v-5B"), {})
    return {", ".join(f"{flag} {value}" for flag, value in zip(PLACEMENT_FLAGS, placement, strict=True)):
            placement for placement in every}


@pytest.fixture(scope="module")
def order(named) -> list[str]:
    return list(named)


@pytest.fixture(scope="module")
def one_gpu() -> list[dict]:
    return memory_fits.fits("ti2v-5B", 0)


def test_a_larger_card_never_gets_a_slower_placement(one_gpu, order):
    rows = one_gpu
    assert [row["card_GiB"] for row in rows] == list(memory_fits.CARDS)
    # The decode of 121 frames at 720p in float32 needs more than a 16 GB card; 141 GB holds every model.
    assert rows[0]["placement"] == "no fit" and rows[0]["stage"] == "vae_decode (VAE)"
    assert rows[-1]["placement"] == "offload_model False, t5_cpu False, stream_blocks 0"
    fitting = [row for row in rows if row["placement"] != "no fit"]
    assert all(row["need_GiB"] <= row["budget_GiB"] for row in fitting)
    # Each larger card's placement comes no later in the order of speed, and needs no less.
    ranks = [order.index(row["placement"]) for row in fitting]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1] == 0
    needs = [row["need_GiB"] for row in fitting]
    assert needs == sorted(needs)


def test_each_of_two_gpus_fits_its_share(one_gpu, order, named):
    """Each process holds a share of the tokens and of the VAE's rows, so two cards never get a
    slower placement than one of them alone; each process keeps its own weights in CPU memory,
    and sharded weights stay on the GPUs."""
    whole, sharded = memory_fits.fits("ti2v-5B", 0, 2), memory_fits.fits("ti2v-5B", 0, 2, sharded=True)
    for alone, shared in zip(one_gpu, whole, strict=True):
        assert shared["gpus"] == 2 and not shared["fsdp"]
        if alone["placement"] != "no fit":
            assert order.index(shared["placement"]) <= order.index(alone["placement"])
            assert shared["need_GiB"] <= shared["budget_GiB"]
    assert whole[0]["placement"] != "no fit"  # a 16 GB card fits a half of the decode
    plan = weight_plans.release_plan("ti2v-5B", offload_model=False, world=2)
    offloaded = [row for row in whole if row["placement"].startswith("offload_model True")]
    assert offloaded
    for row in offloaded:
        assert row["cpu_GiB"] == round(2 * host_plan(plan.placed(*named[row["placement"]])).peak / _GIB, 2)
    chosen = {row["placement"] for row in sharded} - {"no fit"}
    assert chosen and chosen <= {"offload_model False, t5_cpu False, stream_blocks 0"}


def test_a_launch_the_runtime_refuses_is_not_fitted():
    with pytest.raises(InputError, match="ulysses_size 5 does not divide the DiT's 24 attention heads"):
        memory_fits.fits("ti2v-5B", 0, 5)
