"""``bench_fp8`` on a tiny model and ``cache_quality`` (with ``--dit_fp8`` too) on a tiny release folder,
on the CPU."""

from __future__ import annotations

import json

import torch

from benchmarks import bench_fp8, cache_quality
from benchmarks.bench_dit import Case
from wan_runtime.models import DiTConfig
from wan_runtime.pipelines import load_pipeline

TINY = DiTConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=64, ffn_dim=128, num_heads=2, num_layers=3)


def test_row_has_less_memory_and_a_larger_error():
    row = bench_fp8.run_case(Case(TINY, (2, 4, 6)), torch.device("cpu"), torch.bfloat16, warmup=0, repeat=1)
    assert 0 < row["fp8_MB"] < row["bf16_MB"]
    assert float(row["err_bf16"]) < float(row["err_fp8"]) < 0.05
    assert min(row["bf16_ms"], row["fp8_ms"], row["x_bf16"]) > 0


def test_cache_quality_compares_float8_runs_with_the_references(tmp_path, ti2v_root):
    cache_quality.main(["--ckpt_dir", str(ti2v_root), "--size", "64*64", "--frame_num", "5",
                        "--sample_steps", "3", "--device", "cpu", "--dtype", "float32", "--dit_fp8",
                        "--out-dir", str(tmp_path)])
    [saved] = tmp_path.iterdir()
    rows = {row["setting"]: row for row in json.loads(saved.read_text())["rows"]}
    assert list(rows) == ["fp8", *(f"fp8 + {name}" for name in cache_quality.SETTINGS)]
    assert rows["fp8"]["skip_rate"] == 0 and 10 < rows["fp8"]["psnr_db"] < 80


def test_cache_quality_times_each_setting_after_a_short_run_of_it(tmp_path, ti2v_root, monkeypatch):
    """The first generate pays the set-up (on a GPU, Triton's compiles): timed, it would inflate the
    reference's time and every speedup."""
    calls = []

    def load(*args, **kwargs):
        pipeline = load_pipeline(*args, **kwargs)
        generate = pipeline.generate

        def recorded(prompt, **run):
            calls.append((run["sampling_steps"], run.get("cache")))
            return generate(prompt, **run)

        pipeline.generate = recorded
        return pipeline

    monkeypatch.setattr(cache_quality, "load_pipeline", load)
    cache_quality.main(["--ckpt_dir", str(ti2v_root), "--size", "64*64", "--frame_num", "5",
                        "--sample_steps", "4", "--device", "cpu", "--dtype", "float32",
                        "--out-dir", str(tmp_path)])
    short, caches = cache_quality.WARM_UP_STEPS, list(cache_quality.SETTINGS.values())
    warm_ups, timed = [(short, cache) for cache in caches], [(4, cache) for cache in caches]
    assert calls == [(short, None), (4, None), *warm_ups, *timed]
