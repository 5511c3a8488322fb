"""Step cache sweep: skip rate, wall-time ratio against no cache (same process, side by side),
and deviation from the uncached result (PSNR, max error), plus the manager's overhead per step.

The denoising loop is the pipelines' own (``Pipeline._denoise``) on a random DiT with random text
embeddings; no text encoder or VAE is loaded, so the times are the DiT's and the cache's. The
overhead per step is the threshold-0 run (gate and metric computed, nothing skipped) minus the
uncached run, divided by the steps.

    python -m benchmarks.bench_cache            # CPU: small random ti2v model
    python -m benchmarks.bench_cache --gpu      # CUDA bf16: real widths, --layers layers
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import median_seconds, print_table, save_results
from benchmarks.fidelity import max_error, psnr
from wan_runtime.cache import CacheConfig
from wan_runtime.models import DiTConfig
from wan_runtime.pipelines.base import ImageCondition, Prompts
from wan_runtime.pipelines.residency import Residency
from wan_runtime.pipelines.ti2v import TI2VPipeline
from wan_runtime.solvers import make_solver
from wan_runtime.tasks import TASKS
from wan_runtime.tiny_checkpoints import random_dit

TI2V_5B = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30
)
CPU_MODEL = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=256, ffn_dim=1024, num_heads=2, num_layers=6
)
CPU_LATENT = (48, 3, 16, 16)  # 3 x 8 x 8 = 192 tokens
GPU_LATENT = (48, 21, 44, 80)  # 704x1280x81 ti2v latent: 21 x 22 x 40 = 18,480 tokens
TEXT_TOKENS = 32
THRESHOLDS = (0.0, 0.1, 0.3)


def settings(thresholds: tuple[float, ...]) -> list[tuple[str, float, CacheConfig]]:
    """(name, threshold, config) of every cached setting of the sweep."""
    rows = []
    for t in thresholds:
        rows.append((f"teacache linear {t}", t, CacheConfig(teacache=True, teacache_thresh=t)))
        poly = CacheConfig(teacache=True, teacache_policy="poly", teacache_thresh=t)
        rows.append((f"teacache poly {t}", t, poly))
        rows.append((f"fbcache {t}", t, CacheConfig(fbcache=True, fb_thresh=t)))
    return rows


def build(config: DiTConfig, device: torch.device, dtype: torch.dtype) -> TI2VPipeline:
    """A ti2v pipeline with only its DiT (random weights); enough for ``_denoise``."""
    model = random_dit(config).to(device)
    if dtype != torch.float32:
        model.set_compute_dtype(dtype)
    residency = Residency(device, offload=False)
    residency.add("dit", model)
    return TI2VPipeline(TASKS["ti2v-5B"], device, None, None, {"dit": model}, residency)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="real ti2v-5B width on cuda in bfloat16")
    parser.add_argument("--layers", type=int, default=4, help="DiT layers for --gpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    args = parser.parse_args()
    if args.gpu:
        device, dtype = torch.device("cuda"), torch.bfloat16
        config, latent_shape = replace(TI2V_5B, num_layers=args.layers), GPU_LATENT
    else:
        device, dtype = torch.device("cpu"), torch.float32
        config, latent_shape = CPU_MODEL, CPU_LATENT
    pipeline = build(config, device, dtype)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(latent_shape, generator=g).to(device)
    texts = (torch.randn(1, TEXT_TOKENS, config.text_dim, generator=g).to(device) for _ in range(2))
    prompts = Prompts(*texts)
    spec = TASKS["ti2v-5B"]

    def denoise(cache: CacheConfig | None) -> torch.Tensor:
        solver = make_solver("unipc", args.steps, spec.shift, device)
        with torch.inference_mode():
            return pipeline._denoise(noise, prompts, solver, spec.guide_scale, ImageCondition(), False, cache)

    reference = denoise(None)
    base_s = median_seconds(lambda: denoise(None), device, 1, args.repeat)
    base_ms = round(base_s / args.steps * 1e3, 2)
    rows = [{"setting": "no cache", "skip_rate": 0.0, "time_ratio": 1.0, "ms_per_step": base_ms}]
    for name, thresh, cache in settings(THRESHOLDS):
        out = denoise(cache)
        cond = pipeline.cache_report()["ti2v"]["cond"]
        seconds = median_seconds(lambda cache=cache: denoise(cache), device, 0, args.repeat)
        row = {"setting": name, "skip_rate": round(cond["skipped"] / cond["steps"], 3),
               "time_ratio": round(seconds / base_s, 3), "ms_per_step": round(seconds / args.steps * 1e3, 2),
               "psnr_db": round(psnr(out, reference), 2), "max_err": f"{max_error(out, reference):.2e}",
               "residual_mib": round(pipeline.cache_report()["ti2v"]["residual_bytes"] / 2**20, 3)}
        if thresh == 0:  # nothing skips: the exactness check and the gate's own cost
            row["bitwise"] = torch.equal(out, reference)
            row["overhead_ms_per_step"] = round((seconds - base_s) / args.steps * 1e3, 3)
        rows.append(row)
        print(row, flush=True)
    columns = ["setting", "skip_rate", "time_ratio", "ms_per_step", "psnr_db", "max_err", "residual_mib",
               "bitwise", "overhead_ms_per_step"]
    print_table(rows, columns)
    meta = {"dim": config.dim, "layers": config.num_layers, "latent": list(latent_shape),
            "steps": args.steps, "dtype": str(dtype).removeprefix("torch.")}
    for row in rows:
        row.update(meta)
    print("saved", save_results("bench_cache", device, rows, Path(args.out_dir) if args.out_dir else None))


if __name__ == "__main__":
    main()
