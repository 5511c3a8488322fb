"""Step cache sweep on the product's path: skip rate, wall-time ratio against no cache (same
process, side by side), deviation from the uncached video (PSNR, max error), and the manager's
overhead per step.

A ti2v-5B task folder is written with ``wan_runtime.tiny_checkpoints``: a DiT of the requested
width and depth with random weights, a tiny random T5 and VAE. It is loaded with
``load_pipeline`` and run with ``pipeline.generate(..., cache=CacheConfig(...))``, so what is
timed is what a user runs. The time is the denoising stage's (``last_report.timings``), the
skips are ``cache_report()``'s. The uncached run and every setting are timed in turns over
``--repeat`` rounds after one warm-up each, and compared by their medians.

The manager's overhead is measured twice on the threshold-0 settings (gate and metric computed,
nothing skipped): end to end, their median minus the uncached one (``overhead_ms_per_step``, as
noisy as the machine), and directly, by one more run that times ``CacheManager.forward`` and, inside
it, the model's own stages (``manager_ms_per_step``, ``manager_share``: what is left is the
manager's signal, metric, gate, capture and bookkeeping).

    python -m benchmarks.bench_cache                    # CPU: small random DiT, float32
    python -m benchmarks.bench_cache --gpu --layers 4   # CUDA bfloat16: the ti2v-5B width
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from benchmarks.common import print_table, save_results
from benchmarks.fidelity import VIDEO_RANGE, max_error, psnr
from wan_runtime.cache import CacheConfig, CacheManager, WanStages
from wan_runtime.cache.config import InvalidCacheConfig
from wan_runtime.models import DiTConfig
from wan_runtime.pipelines import Pipeline, load_pipeline
from wan_runtime.tasks import TASKS
from wan_runtime.tiny_checkpoints import write_dit, write_text_encoder, write_vae22

TASK = "ti2v-5B"
TI2V_5B = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30
)
# A text width of 256, not 4096: embedding the 512 text tokens would otherwise cost more than the
# blocks of so small a model, and it runs on skipped steps too (the real models are the reverse).
CPU_MODEL = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=256, ffn_dim=1024, num_heads=2, num_layers=6, text_dim=256
)
PROMPT = "a red boat on a river"
THRESHOLDS = (0.0, 0.1, 0.3)
# A cached setting of the sweep: name, threshold, config.
Setting = tuple[str, float, CacheConfig]


@dataclass(frozen=True)
class Shape:
    """The video asked for: ``size`` ``"W*H"`` and ``frame_num`` frames."""

    size: str
    frame_num: int


# Latent 48 x 3 x 16 x 16: 3 x 8 x 8 = 192 DiT tokens.
CPU_SHAPE = Shape("256*256", 9)
# The ti2v-5B default, latent 48 x 21 x 44 x 80: 21 x 22 x 40 = 18,480 DiT tokens.
GPU_SHAPE = Shape("1280*704", 81)


def settings(thresholds: tuple[float, ...]) -> list[Setting]:
    """(name, threshold, config) of every cached setting of the sweep."""
    rows = []
    for t in thresholds:
        rows.append((f"teacache linear {t}", t, CacheConfig(teacache=True, teacache_thresh=t)))
        poly = CacheConfig(teacache=True, teacache_policy="poly", teacache_thresh=t)
        rows.append((f"teacache poly {t}", t, poly))
        rows.append((f"fbcache {t}", t, CacheConfig(fbcache=True, fb_thresh=t)))
    return rows


def write_task(root: Path, config: DiTConfig, dtype: torch.dtype) -> Path:
    """A ti2v-5B folder at ``root``: a random DiT of ``config`` stored in ``dtype``, a tiny T5 of
    the DiT's text width and a tiny VAE 2.2."""
    write_text_encoder(root, dim=config.text_dim)
    # The VAE is not timed: the narrowest one keeps each run short.
    write_vae22(root / TASKS[TASK].vae_file, base_dim=8, decoder_dim=8)
    write_dit(root, config, dtype=dtype)
    return root


class Runner:
    """Generates one video per call with fixed arguments, a cache setting aside, and keeps the
    denoising times."""

    def __init__(self, pipeline: Pipeline, shape: Shape, steps: int) -> None:
        self.pipeline = pipeline
        self.arguments = {"size": shape.size, "frame_num": shape.frame_num, "sampling_steps": steps,
                          "seed": 0, "progress": False}
        self.seconds: dict[str, list[float]] = {}

    def __call__(self, name: str, cache: CacheConfig | None, timed: bool = True) -> torch.Tensor:
        # The manager's plan and summary lines would bury the table: they are not shown.
        with contextlib.redirect_stdout(io.StringIO()):
            video = self.pipeline.generate(PROMPT, cache=cache, **self.arguments)
        if timed:
            self.seconds.setdefault(name, []).append(self.pipeline.last_report.timings["denoise"])
        return video

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])


class ManagerClock:
    """Seconds spent in ``CacheManager.forward`` and, of those, in the model's own stages: the
    difference is the manager's work. The device is synchronised around each timed call, so every
    part is charged with its own kernels."""

    MODEL_STAGES = ("prepare", "run_blocks", "finish")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = {"forward": 0.0, "model": 0.0}

    def _timed(self, fn: Callable, part: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._sync()
            self.seconds[part] += time.perf_counter() - start
            return out
        return timed

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def attached(self) -> Iterator[ManagerClock]:
        """Time every manager forward and model stage inside the block."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(CacheManager, "forward",
                                                  self._timed(CacheManager.forward, "forward")))
            for name in self.MODEL_STAGES:
                stage = self._timed(getattr(WanStages, name), "model")
                stack.enter_context(mock.patch.object(WanStages, name, stage))
            yield self

    @property
    def manager_seconds(self) -> float:
        return self.seconds["forward"] - self.seconds["model"]


def manager_overhead(runner: Runner, cache: CacheConfig, device: torch.device, steps: int) -> dict:
    """The manager's own time per sampling step (both branches) and its share of the forwards'."""
    clock = ManagerClock(device)
    with clock.attached():
        runner("manager clock", cache, timed=False)
    return {"manager_ms_per_step": round(clock.manager_seconds / steps * 1e3, 3),
            "manager_share": round(clock.manager_seconds / clock.seconds["forward"], 4)}


def sweep(
    runner: Runner, cached: list[Setting], repeat: int, steps: int, device: torch.device,
    checkpoint: Callable[[list[dict]], object] = lambda rows: None,
) -> list[dict]:
    """One row per setting, the uncached run first. ``checkpoint`` gets the rows once their
    quality columns are known, before the (longer) timed rounds."""
    rows = [{"setting": "no cache", "skip_rate": 0.0}, *quality(runner, cached)]
    checkpoint(rows)
    runs = [("no cache", None), *((name, cache) for name, _, cache in cached)]
    # In turns, so a slow spell of the machine falls on every setting, each round starting one
    # setting later, so no setting always runs first or after the same one.
    for r in range(repeat):
        for name, cache in runs[r % len(runs):] + runs[:r % len(runs)]:
            runner(name, cache)
    base = runner.median("no cache")
    configs = {name: (thresh, cache) for name, thresh, cache in cached}
    for row in rows:
        seconds = runner.median(row["setting"])
        row["time_ratio"] = round(seconds / base, 3)
        row["ms_per_step"] = round(seconds / steps * 1e3, 2)
        thresh, cache = configs.get(row["setting"], (None, None))
        if thresh == 0:  # the gate's and metric's own cost
            row["overhead_ms_per_step"] = round((seconds - base) / steps * 1e3, 3)
            row.update(manager_overhead(runner, cache, device, steps))
    return rows


def quality(runner: Runner, cached: list[Setting]) -> list[dict]:
    """Per setting (its untimed warm-up run): skip rate, deviation from the uncached video and the
    cached tensors' peak size."""
    reference = runner("no cache", None, timed=False)
    rows = []
    for name, thresh, cache in cached:
        video = runner(name, cache, timed=False)
        report = runner.pipeline.cache_report()["ti2v"]
        row = {"setting": name, "skip_rate": round(report["cond"]["skipped"] / report["cond"]["steps"], 3),
               "psnr_db": round(psnr(video, reference, VIDEO_RANGE), 2),
               "max_err": f"{max_error(video, reference):.2e}",
               "residual_mib": round(report["residual_bytes"] / 2**20, 3)}
        if thresh == 0:  # nothing skips: the exactness check
            row["bitwise"] = torch.equal(video, reference)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="the ti2v-5B width on cuda in bfloat16")
    parser.add_argument("--layers", type=int, default=4, help="DiT layers for --gpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (after one warm-up)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS),
                        help=f"thresholds of the sweep (default {' '.join(map(str, THRESHOLDS))})")
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    args = parser.parse_args()
    for name in ("layers", "steps", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    try:  # before minutes of writing and loading
        configs = settings(tuple(args.thresholds))
    except InvalidCacheConfig as err:
        parser.error(f"--thresholds: {'; '.join(err.problems)}")
    if args.gpu:
        device, dtype = torch.device("cuda"), torch.bfloat16
        config, shape = replace(TI2V_5B, num_layers=args.layers), GPU_SHAPE
    else:
        device, dtype = torch.device("cpu"), torch.float32
        config, shape = CPU_MODEL, CPU_SHAPE
    meta = {"dim": config.dim, "layers": config.num_layers, "size": shape.size, "frame_num": shape.frame_num,
            "steps": args.steps, "repeat": args.repeat, "dtype": str(dtype).removeprefix("torch.")}
    out_dir = Path(args.out_dir) if args.out_dir else None

    def save(rows: list[dict]) -> None:
        # Also before the timed rounds, so a run stopped at its time limit keeps the quality columns.
        path = save_results("bench_cache", device, [{**row, **meta} for row in rows], out_dir)
        print("saved", path, flush=True)

    # The folder outlives the run: the loaded weights may be memory-mapped from it.
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as folder:
        root = write_task(Path(folder), config, dtype)
        pipeline = load_pipeline(TASK, root, device=device, dtype=dtype, offload_model=False)
        runner = Runner(pipeline, shape, args.steps)
        rows = sweep(runner, configs, args.repeat, args.steps, device, save)
    columns = ["setting", "skip_rate", "time_ratio", "ms_per_step", "psnr_db", "max_err", "residual_mib",
               "bitwise", "overhead_ms_per_step", "manager_ms_per_step", "manager_share"]
    print_table(rows, columns)
    save(rows)


if __name__ == "__main__":
    main()
