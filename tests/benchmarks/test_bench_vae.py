"""``bench_vae`` on narrow VAEs: the tiled decode's distance from the whole-frame one it follows,
the encode row, the estimated peaks, and no measured memory columns on the CPU."""

from dataclasses import replace

import torch

from benchmarks import bench_vae

DECODE = bench_vae.Case("decode", "2.2", (8, 12), 128, 64, 5)


def test_a_tiled_decode_is_compared_with_the_whole_one_before_it():
    whole: dict = {}
    cpu = torch.device("cpu")
    rows = [bench_vae.run_case(case, cpu, torch.float32, 1, whole)
            for case in (DECODE, replace(DECODE, tile=64),
                         bench_vae.Case("encode", "2.1", (8,), 128, 64, 5))]
    assert [(row["op"], row["tile"]) for row in rows] == [("decode", 0), ("decode", 64), ("encode", 0)]
    assert "rel_l2" not in rows[0] and 0 < rows[1]["rel_l2"] < 1
    assert all(row["ms"] > 0 and "peak_alloc_GiB" not in row and "estimate_GiB" in row for row in rows)


def test_the_estimate_of_a_tiled_decode_is_below_the_whole_ones():
    whole = bench_vae.estimated_peak(DECODE, torch.float32)
    assert 0 < bench_vae.estimated_peak(replace(DECODE, tile=64), torch.float32) < whole


def test_the_gpu_cases_are_the_release_widths_at_720p():
    cases = bench_vae.cases(gpu=True)
    assert {(case.version, case.dims, case.width, case.height, case.frames) for case in cases} == {
        ("2.1", (96,), 1280, 720, 81), ("2.2", (160, 256), 1280, 704, 81)}
    assert [case.tile for case in cases if case.op == "decode"] == [0, 512, 256] * 2
