"""Timing and result files shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import torch

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


def forward_parser(doc: str, gpu_help: str, layers: int) -> argparse.ArgumentParser:
    """The arguments of the forward benchmarks: ``--gpu`` (``gpu_help``), ``--layers`` (default
    ``layers``), ``--warmup``, ``--repeat``, ``--out-dir``; ``doc`` is the module's docstring."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help=gpu_help)
    parser.add_argument("--layers", type=int, default=layers, help=f"DiT blocks (default {layers})")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    return parser


def run_cases(
    name: str, device: torch.device, cases: Iterable[CaseT], run: Callable[[CaseT], dict], columns: list[str],
    out_dir: str | None,
) -> list[dict]:
    """``run`` each case, printing its row and saving every row so far after it (a run cut off
    by a time limit keeps the rows it made), then the table and the results file; returns the
    rows."""
    rows, path = [], None
    for case in cases:
        rows.append(run(case))
        print(rows[-1], flush=True)
        path = save_results(name, device, rows, Path(out_dir) if out_dir else None)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(rows, columns)
    print("saved", path)
    return rows
