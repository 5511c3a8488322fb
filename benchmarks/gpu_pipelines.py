"""Every pipeline end to end on a GPU, on tiny official-layout checkpoints (random weights).

    python -m benchmarks.gpu_pipelines [--out-dir DIR]

What the CPU suite cannot show: the seeded CUDA generator (same seed, same video), bfloat16
models on the device with and without ``offload_model`` (after a run every offloaded model is back
on the CPU), each solver stepping device tensors (``euler`` keeps its schedule on the CPU), the
peak-memory report beside the estimate made before the run (also with both step caches on),
the DiT blocks replayed from CUDA graphs (``cuda_graphs``: the eager pipeline's video, offloaded
and cached too), and per-phase timings. The checkpoints are tiny, so the timings measure
overheads, not the real models. It exits 1 after the table where a case failed or one of its
checks did not hold (``_failed_checks``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.common import run_cases
from wan_runtime.cache import CacheConfig
from wan_runtime.demo import demo_audio, demo_image
from wan_runtime.pipelines import load_pipeline
from wan_runtime.tasks import TASKS
from wan_runtime.tiny_checkpoints import write_task_checkpoint


def request(task: str, solver: str) -> dict:
    """``generate``'s arguments for ``task``: s2v-14B takes speech and frames per clip."""
    common = {"size": "128*96", "sampling_steps": 4, "seed": 1234, "progress": False, "sample_solver": solver}
    if task == "s2v-14B":
        return {**common, "image": demo_image(), "audio": demo_audio(), "infer_frames": 8, "num_clip": 2}
    return {**common, "image": demo_image() if task == "i2v-A14B" else None, "frame_num": 9}


# Both step caches: the estimate counts their tensors.
CACHED = CacheConfig(teacache=True, fbcache=True)


def run(
    task: str, root: Path, offload: bool, solver: str, device: torch.device, cache: bool, graphs: bool = False
) -> dict:
    options = {"device": device, "dtype": torch.bfloat16, "offload_model": offload}
    pipe = load_pipeline(task, root, cuda_graphs=graphs, **options)
    arguments = {**request(task, solver), "cache": CACHED if cache else None}
    videos = [pipe.generate("a red boat on a river", **arguments) for _ in range(2)]
    graphed = {}
    if graphs:
        eager = load_pipeline(task, root, **options).generate("a red boat on a river", **arguments)
        graphed = {"same_as_eager": bool(torch.equal(videos[0], eager)),
                   "captures": pipe.stage_graphs.captures, "replays": pipe.stage_graphs.replays}
    sampling = ("sampling_steps", "seed", "progress", "sample_solver")
    estimate = pipe.estimate_memory(**{k: v for k, v in arguments.items() if k not in sampling})
    report = pipe.last_report
    on_cpu = all(p.device.type == "cpu" for dit in pipe.dits.values() for p in dit.parameters())
    return {
        "task": task,
        "offload": offload,
        "solver": solver,
        "cache": cache,
        "graphs": graphs,
        **graphed,
        "shape": "x".join(map(str, videos[0].shape)),
        "finite": bool(torch.isfinite(videos[0]).all()),
        "same_seed_same_video": bool(torch.equal(videos[0], videos[1])),
        "dits_on_cpu_after": on_cpu,
        "peak_MiB": round((report.peak_memory_bytes or 0) / 2**20, 1),
        "estimate_MiB": round(estimate.peak / 2**20, 1),
        **{f"{k}_ms": round(v * 1e3, 1) for k, v in report.timings.items()},
    }


# (offload, solver, step caches, CUDA graphs) of each task.
CASES = ((False, "unipc", False, False), (True, "unipc", False, False), (False, "euler", False, False),
         (False, "dpm++", False, False), (False, "unipc", True, False), (False, "unipc", False, True),
         (True, "unipc", True, True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script itself")
    args = parser.parse_args()
    device = torch.device(args.device)
    cases = [(task, *case) for task in TASKS for case in CASES if device.type == "cuda" or not case[3]]
    with tempfile.TemporaryDirectory() as tmp:
        roots = {task: write_task_checkpoint(task, Path(tmp) / task) for task in TASKS}
        run_cases("gpu_pipelines", device, cases, lambda case: _run_case(case, roots, device), None,
                  args.out_dir, label=_label, checks=_failed_checks)


def _run_case(case: tuple[str, bool, str, bool, bool], roots: dict[str, Path], device: torch.device) -> dict:
    task, offload, solver, cache, graphs = case
    return run(task, roots[task], offload, solver, device, cache, graphs)


def _label(case: tuple[str, bool, str, bool, bool]) -> dict:
    return dict(zip(("task", "offload", "solver", "cache", "graphs"), case, strict=True))


def _failed_checks(row: dict) -> list[str]:
    """The checks of ``row`` that did not hold: a finite video, the seed's video again, the eager
    video from graphs, and after an offloaded run every DiT back on the CPU."""
    checks = ["finite", "same_seed_same_video", "same_as_eager"]
    checks += ["dits_on_cpu_after"] if row["offload"] else []
    return [name for name in checks if row.get(name) is False]


if __name__ == "__main__":
    main()
