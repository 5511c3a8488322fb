"""Timing and result files shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import torch

from wan_runtime.models import DiTConfig, WanModel
from wan_runtime.tiny_checkpoints import random_dit

RESULTS = Path(__file__).parent / "results"
CaseT = TypeVar("CaseT")


def device_name(device: torch.device) -> str:
    """The card's name on CUDA, else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def median_seconds(fn: Callable[[], object], device: torch.device, warmup: int, repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after ``warmup``, synchronising the device."""
    return median_seconds_in_turns({"fn": fn}, device, warmup, repeat)["fn"]


def median_seconds_in_turns(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeat: int
) -> dict[str, float]:
    """Median wall time of each of ``fns``, run in turns (one call of each per round, each round
    starting one further along, so none always follows the same one) so that a slow spell of the
    machine falls on all of them alike; ``warmup`` rounds are not timed."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for index in range(repeat):
        shift = index % len(order)
        for name, fn in order[shift:] + order[:shift]:
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def save_results(name: str, device: torch.device, rows: list[dict], out_dir: Path | None = None) -> Path:
    """Write ``rows`` as JSON named by date, device and benchmark; returns the path."""
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    card = device_name(device).replace(" ", "-").replace("/", "-")
    stamp = datetime.date.today().isoformat()
    path = out_dir / f"{stamp}_{card}_{name}.json"
    payload = {"benchmark": name, "device": device_name(device), "date": stamp,
               "torch": torch.__version__, "rows": rows}
    path.write_text(json.dumps(payload, indent=2))
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain fixed-width table of ``rows``."""
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(f"{row.get(c, '')}".ljust(w) for c, w in zip(columns, widths, strict=True)))


def forward_parser(
    doc: str, gpu_help: str, layers: int, gpu_layers_only: bool = False
) -> argparse.ArgumentParser:
    """The arguments of the forward benchmarks: ``--gpu`` (``gpu_help``), ``--layers`` (default
    ``layers``; ``gpu_layers_only``: the CPU cases keep their own), ``--warmup``, ``--repeat``,
    ``--out-dir``; ``doc`` is the module's docstring."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help=gpu_help)
    where = " with --gpu (the CPU cases have their own)" if gpu_layers_only else ""
    parser.add_argument("--layers", type=int, default=layers, help=f"DiT blocks{where} (default {layers})")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    return parser


def run_cases(
    name: str, device: torch.device, cases: Iterable[CaseT], run: Callable[[CaseT], dict],
    columns: list[str] | None, out_dir: str | Path | None, keep_going: bool = True,
    label: Callable[[CaseT], dict] = lambda case: {"case": str(case)},
    checks: Callable[[dict], list[str]] = lambda row: [],
) -> list[dict]:
    """``run`` each case, printing its row and saving every row so far after it (a run cut off
    by a time limit keeps the rows it made), then the table (of ``columns``, or of every row's
    keys) and the results file; returns the rows. With ``keep_going`` a case that raises gives
    the row ``label(case)`` with its ``error`` and the next case runs: on a lent GPU one failure
    must not cost the other cases. Without it (cases whose processes must stay in step) the
    error is raised. After the table the script exits 1 naming each case (``label``) that
    failed or whose row failed one of its ``checks`` (the names of those that did not hold)."""
    rows, path, failures = [], None, []
    for case in cases:
        try:
            rows.append(run(case))
            failed = checks(rows[-1])
        except Exception as error:
            if not keep_going:
                raise
            traceback.print_exc()
            rows.append({**label(case), "error": f"{type(error).__name__}: {error}"})
            failed = [rows[-1]["error"]]
        if failed:
            case_name = " ".join(f"{key}={value}" for key, value in label(case).items())
            failures.append(f"{case_name}: {', '.join(failed)}")
        print(rows[-1], flush=True)
        path = save_results(name, device, rows, Path(out_dir) if out_dir else None)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # The columns chosen, and with a failed case what names it and its error.
    extra = dict.fromkeys(key for row in rows for key in row if columns is None or "error" in row)
    print_table(rows, [*(columns or []), *(key for key in extra if key not in (columns or []))])
    print("saved", path)
    if failures:
        sys.exit(f"{name}: {len(failures)} of {len(rows)} cases failed: " + "; ".join(failures))
    return rows


def host_dit(config: DiTConfig, model_class: type[WanModel] = WanModel) -> WanModel:
    """A copy of ``random_dit(config, seed=0, model_class=model_class)``, float32 on the host,
    built once for consecutive cases of one model (a random A14B-width DiT takes the host ~20 s
    to draw); the previous model's build is dropped before the next is drawn."""
    key = (config, model_class)
    if key not in _HOST_DITS:
        _HOST_DITS.clear()
        _HOST_DITS[key] = random_dit(config, seed=0, model_class=model_class)
    return copy.deepcopy(_HOST_DITS[key])


_HOST_DITS: dict[tuple[DiTConfig, type[WanModel]], WanModel] = {}
