"""Cached against uncached generations with real weights: speedup, PSNR and SSIM per setting.

For each prompt and seed the uncached video is generated once, then each cache setting with the
same arguments; the speedup is the ratio of the denoising stage's times, measured in this process
after a short run of each setting (``WARM_UP_STEPS``), so that neither side is charged with the
first calls' set-up (Triton's compiles, cuBLAS's handles).
With ``--dit_fp8`` the uncached videos come from the DiTs in ``--dtype`` as before, and the
settings run on float8 DiTs (``--dit_fp8`` of the command line), loaded once those are made: a
row for float8 alone, and one for float8 with each cache setting.

    python -m benchmarks.cache_quality --task ti2v-5B --ckpt_dir DIR [--prompts FILE] [--seeds 0 1]
                                       [--dit_fp8]
"""

from __future__ import annotations

import argparse
import gc
import statistics
from pathlib import Path

import torch

from benchmarks.common import print_table, save_results
from benchmarks.fidelity import VIDEO_RANGE, psnr, ssim
from wan_runtime.cache import CacheConfig
from wan_runtime.cli_args import EXAMPLE_PROMPT
from wan_runtime.pipelines import load_pipeline

# Enough steps for a cache to decide one (the first and last of each expert always compute).
WARM_UP_STEPS = 3
SETTINGS = {
    "teacache 0.08": CacheConfig(teacache=True, teacache_thresh=0.08),
    "teacache 0.2": CacheConfig(teacache=True, teacache_thresh=0.2),
    "fbcache 0.08": CacheConfig(fbcache=True, fb_thresh=0.08),
    "fbcache 0.15": CacheConfig(fbcache=True, fb_thresh=0.15),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt_dir", required=True)
    parser.add_argument("--task", default="ti2v-5B")
    parser.add_argument("--image", default=None, help="input image (required for i2v-A14B)")
    parser.add_argument("--prompts", default=None, help="text file, one prompt a line (default: the example)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--size", default=None)
    parser.add_argument("--frame_num", type=int, default=None)
    parser.add_argument("--sample_steps", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--dit_fp8", action="store_true",
                        help="run the settings on float8 DiTs, against the references of --dtype DiTs")
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    prompts = [EXAMPLE_PROMPT[args.task]] if args.prompts is None else [
        line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()
    ]
    options = {"device": args.device, "dtype": getattr(torch, args.dtype)}
    pipeline = load_pipeline(args.task, args.ckpt_dir, **options)
    run = {"image": args.image, "size": args.size, "frame_num": args.frame_num,
           "sampling_steps": args.sample_steps, "progress": False}
    videos = [(prompt, seed) for prompt in prompts for seed in args.seeds]
    warm_up = {**run, "sampling_steps": WARM_UP_STEPS}
    pipeline.generate(prompts[0], seed=args.seeds[0], **warm_up)
    references = []
    for prompt, seed in videos:
        references.append((pipeline.generate(prompt, seed=seed, **run).cpu(),
                           pipeline.last_report.timings["denoise"]))
    settings: dict[str, CacheConfig | None] = SETTINGS
    if args.dit_fp8:
        # One pipeline at a time: the float8 DiTs load once the reference ones are gone.
        del pipeline
        gc.collect()
        pipeline = load_pipeline(args.task, args.ckpt_dir, dit_fp8=True, **options)
        settings = {"fp8": None, **{f"fp8 + {name}": cache for name, cache in SETTINGS.items()}}
    for cache in settings.values():
        pipeline.generate(prompts[0], seed=args.seeds[0], cache=cache, **warm_up)

    results: dict[str, list[dict]] = {name: [] for name in settings}
    for (prompt, seed), (reference, base_s) in zip(videos, references, strict=True):
        for name, cache in settings.items():
            video = pipeline.generate(prompt, seed=seed, cache=cache, **run).cpu()
            report = pipeline.cache_report()
            steps = sum(entry["cond"]["steps"] for entry in report.values())
            skipped = sum(entry["cond"]["skipped"] for entry in report.values())
            results[name].append({
                "speedup": base_s / pipeline.last_report.timings["denoise"],
                "psnr_db": psnr(video, reference, VIDEO_RANGE),
                "ssim": ssim(video, reference, VIDEO_RANGE),
                "skip_rate": skipped / steps if steps else 0.0,
            })
    rows = []
    for name, samples in results.items():
        row = {"setting": name, "videos": len(samples)}
        for key in ("speedup", "psnr_db", "ssim", "skip_rate"):
            row[key] = round(statistics.mean(s[key] for s in samples), 4)
        rows.append(row)
    print_table(rows, ["setting", "videos", "speedup", "psnr_db", "ssim", "skip_rate"])
    out_dir = Path(args.out_dir) if args.out_dir else None
    print("saved", save_results(f"cache_quality_{args.task}", pipeline.device, rows, out_dir))


if __name__ == "__main__":
    main()
