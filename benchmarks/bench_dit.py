"""Our DiT forward against the official ``WanModel`` forward, same weights and inputs, one process.

    python -m benchmarks.bench_dit                # CPU size: dim 512, 4 layers, ~2k tokens, float32
    python -m benchmarks.bench_dit --gpu          # real widths (5120 / 3072), 2 layers, 32,760 and
                                                  # 75,600 tokens, bfloat16

On the GPU the official model runs as its pipelines run it: bfloat16 autocast, and for timing its
weights converted to bfloat16 (its faster ``--convert_model_dtype`` mode). Parity columns: relative
L2 error of each bfloat16 output against a float32 forward of our model on the same weights
(``ours``/``official``), of ours against the official (``ours~off``), and of both in their
``convert_model_dtype`` modes, every weight in bfloat16 (``conv~off``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from benchmarks.common import median_seconds, print_table, save_results
from tests.official import official_module
from tests.tolerances import rel_l2
from wan_runtime.models import DiTConfig
from wan_runtime.tiny_checkpoints import random_dit

A14B = DiTConfig(
    model_type="i2v", in_dim=36, out_dim=16, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40
)
TI2V_5B = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30
)
CPU_SIZE = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=512, ffn_dim=2048, num_heads=4, num_layers=4
)
# Latent grids (F, H, W): 480p and 720p 81-frame videos with the Wan2.1 VAE (32,760 / 75,600 tokens).
GRID_480P = (21, 60, 104)
GRID_720P = (21, 90, 160)


@dataclass
class Case:
    config: DiTConfig
    grid: tuple[int, int, int]

    @property
    def tokens(self) -> int:
        f, h, w = self.grid
        p = self.config.patch_size
        return f // p[0] * (h // p[1]) * (w // p[2])


def inputs(case: Case, device: torch.device, seed: int = 0):
    """Latents, timesteps (per token for ti2v: first frame at 0), text and i2v conditioning."""
    g = torch.Generator().manual_seed(seed)
    c, (f, h, w) = case.config, case.grid
    latent_channels = 16 if c.model_type == "i2v" else c.in_dim
    x = torch.randn(1, latent_channels, f, h, w, generator=g)
    y = torch.randn(1, c.in_dim - latent_channels, f, h, w, generator=g) if c.model_type == "i2v" else None
    context = torch.randn(1, 120, c.text_dim, generator=g)
    if c.model_type == "ti2v":
        t = torch.full((1, case.tokens), 812.0)
        t[:, : case.tokens // (f // c.patch_size[0])] = 0.0
    else:
        t = torch.tensor([812.0])
    move = lambda u: None if u is None else u.to(device)  # noqa: E731
    return move(x), move(t), move(context), move(y)


def official_call(ref, x, t, context, y, tokens):
    t = t.expand(1, tokens) if t.dim() == 1 else t
    out = ref(list(x), t, list(context), tokens, y=None if y is None else list(y))
    return out[0][None]


def run_case(case: Case, device: torch.device, dtype: torch.dtype, warmup: int, repeat: int) -> dict:
    official = official_module("modules.model")
    ours = random_dit(case.config, seed=0).to(device)
    ref_kwargs = {k: getattr(case.config, k) for k in (
        "model_type", "in_dim", "out_dim", "dim", "ffn_dim", "num_heads", "num_layers", "text_len", "eps")}
    ref = official.WanModel(**ref_kwargs)
    ref.load_state_dict(ours.state_dict())
    ref = ref.to(device).eval().requires_grad_(False)
    x, t, context, y = inputs(case, device)
    autocast = (torch.amp.autocast("cuda", dtype=dtype) if device.type == "cuda" and dtype != torch.float32
                else contextlib.nullcontext())

    def ref_forward():
        with autocast:
            return official_call(ref, x, t, context, y, case.tokens)

    row = {"dim": case.config.dim, "layers": case.config.num_layers, "tokens": case.tokens,
           "t": "per-token" if t.dim() == 2 else "per-sample", "dtype": str(dtype).removeprefix("torch.")}
    with torch.no_grad():
        if dtype != torch.float32:
            truth = ours(x, t, context, y)
            ref_out = ref_forward()
            ours.set_compute_dtype(dtype)
            ours_out = ours(x, t, context, y)
            row["err_ours"] = f"{rel_l2(ours_out, truth):.2e}"
            row["err_official"] = f"{rel_l2(ref_out, truth):.2e}"
            row["ours~off"] = f"{rel_l2(ours_out, ref_out):.2e}"
            del truth, ref_out, ours_out
            ref.to(dtype)  # the official --convert_model_dtype mode, its fastest
        else:
            row["ours~off"] = f"{rel_l2(ours(x, t, context, y), ref_forward()):.2e}"
        official_s = median_seconds(ref_forward, device, warmup, repeat)
        ours_s = median_seconds(lambda: ours(x, t, context, y), device, warmup, repeat)
        if dtype != torch.float32:
            ours.set_compute_dtype(dtype, keep_float32=False)
            row["conv~off"] = f"{rel_l2(ours(x, t, context, y), ref_forward()):.2e}"
    row.update(official_ms=round(official_s * 1e3, 1), ours_ms=round(ours_s * 1e3, 1),
               speedup=round(official_s / ours_s, 3))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="real widths on cuda in bfloat16")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    args = parser.parse_args()
    if args.gpu:
        device, dtype = torch.device("cuda"), torch.bfloat16
        cases = [Case(replace(cfg, num_layers=args.layers), grid)
                 for cfg in (A14B, TI2V_5B) for grid in (GRID_480P, GRID_720P)]
    else:
        device, dtype = torch.device("cpu"), torch.float32
        cpu_i2v = replace(CPU_SIZE, model_type="i2v", in_dim=36, out_dim=16)
        cases = [Case(CPU_SIZE, (8, 24, 40)), Case(cpu_i2v, (8, 24, 40))]
    rows = []
    for case in cases:
        rows.append(run_case(case, device, dtype, args.warmup, args.repeat))
        print(rows[-1], flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    columns = ["dim", "layers", "tokens", "t", "dtype", "official_ms", "ours_ms", "speedup",
               "err_ours", "err_official", "ours~off", "conv~off"]
    print_table(rows, columns)
    print("saved", save_results("bench_dit", device, rows, Path(args.out_dir) if args.out_dir else None))


if __name__ == "__main__":
    main()
