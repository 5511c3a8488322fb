"""``memory_fits``: the placements chosen for the release video on each card size hold together."""

from __future__ import annotations

from benchmarks import memory_fits, weight_plans
from wan_runtime.checks import PLACEMENT_FLAGS
from wan_runtime.pipelines.memory_fit import placements


def test_a_larger_card_never_gets_a_slower_placement():
    rows = memory_fits.fits("ti2v-5B", 0)
    assert [row["card_GiB"] for row in rows] == list(memory_fits.CARDS)
    # The decode of 121 frames at 720p in float32 needs more than a 16 GB card; 141 GB holds every model.
    assert rows[0]["placement"] == "no fit" and rows[0]["stage"] == "vae_decode (VAE)"
    assert rows[-1]["placement"] == "offload_model False, t5_cpu False, stream_blocks 0"
    fitting = [row for row in rows if row["placement"] != "no fit"]
    assert all(row["need_GiB"] <= row["budget_GiB"] for row in fitting)
    # Each larger card's placement comes no later in the order of speed, and needs no less.
    order = [", ".join(f"{name} {value}" for name, value in zip(PLACEMENT_FLAGS, placement, strict=True))
             for placement in placements(weight_plans.release_plan("ti2v-5B"), {})]
    ranks = [order.index(row["placement"]) for row in fitting]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1] == 0
    needs = [row["need_GiB"] for row in fitting]
    assert needs == sorted(needs)
