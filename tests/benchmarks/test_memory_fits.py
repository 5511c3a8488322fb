"""``memory_fits``: the placements chosen for the release video on each card size hold together."""

from __future__ import annotations

from benchmarks import memory_fits


def test_a_larger_card_never_gets_a_slower_placement():
    rows = memory_fits.fits("ti2v-5B", 0)
    assert [row["card_GiB"] for row in rows] == list(memory_fits.CARDS)
    # The decode of 121 frames at 720p in float32 needs more than a 16 GB card; 141 GB holds every model.
    assert rows[0]["placement"] == "no fit" and rows[0]["stage"] == "vae_decode (VAE)"
    assert rows[-1]["placement"] == "offload_model False, t5_cpu False, stream_blocks 0"
    fitting = [row for row in rows if row["placement"] != "no fit"]
    assert all(row["need_GiB"] <= row["budget_GiB"] for row in fitting)
    # Offloading gives way to every model staying once the card holds them all: a larger card, a
    # faster placement, which needs more.
    chosen = [row["placement"] for row in fitting]
    assert chosen[0].startswith("offload_model True") and chosen[-1].startswith("offload_model False")
    needs = [row["need_GiB"] for row in fitting]
    assert needs == sorted(needs)
