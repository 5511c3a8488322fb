"""Our DiT forwards against the official ``WanModel`` and ``WanModel_S2V`` forwards, same weights
and inputs, one process.

    python -m benchmarks.bench_dit                # CPU size: dim 512, 4 layers, ~2k tokens, float32
    python -m benchmarks.bench_dit --gpu          # real widths (5120 / 3072), 2 layers, 32,760 and
                                                  # 75,600 tokens, and the S2V DiT on one 80-frame
                                                  # 1024x704 clip (with its reference and motion
                                                  # tokens), bfloat16
    python -m benchmarks.bench_dit --compile      # also ours with the blocks compiled (--compile of
                                                  # the CLI): its time, speed-up over ours eager
                                                  # (x_eager, the two timed in turns), first-call
                                                  # (compile) time and error against ours eager

On the GPU the official model runs as its pipelines run it: bfloat16 autocast, and for timing its
weights converted to bfloat16 (its faster ``--convert_model_dtype`` mode). Parity columns: relative
L2 error of each bfloat16 output against a float32 forward of our model on the same weights
(``ours``/``official``), of ours against the official (``ours~off``), and of both in their
``convert_model_dtype`` modes, every weight in bfloat16 (``conv~off``).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, replace

import torch
from torch._inductor import config as inductor_config

from benchmarks.common import forward_parser, host_dit, median_seconds, median_seconds_in_turns, run_cases
from benchmarks.release_configs import A14B, TI2V_5B
from tests.models.s2v_helpers import official_s2v
from tests.official import official_module
from tests.tolerances import rel_l2
from wan_runtime.models import DiTConfig, WanModel
from wan_runtime.models.compilation import compile_blocks
from wan_runtime.models.s2v_config import S2VConfig
from wan_runtime.models.s2v_dit import MOTION_FRAMES, WanModelS2V

CPU_SIZE = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=512, ffn_dim=2048, num_heads=4, num_layers=4
)
# The release's sizes; one audio-injection block, as few layers run (the release injects in 12 of 40).
S2V_14B = S2VConfig(num_layers=40, audio_inject_layers=(0,))
CPU_S2V = S2VConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=4, audio_inject_layers=(0, 2))
# Latent grids (F, H, W): 480p and 720p 81-frame videos with the Wan2.1 VAE (32,760 / 75,600 tokens).
GRID_480P = (21, 60, 104)
GRID_720P = (21, 90, 160)
# One s2v clip of 80 frames at 1024x704: 56,320 video tokens, plus 2,816 reference tokens and the
# FramePack tokens of the 19 motion latents.
GRID_S2V_CLIP = (20, 88, 128)


@dataclass
class Case:
    config: DiTConfig
    grid: tuple[int, int, int]

    @property
    def tokens(self) -> int:
        f, h, w = self.grid
        p = self.config.patch_size
        return f // p[0] * (h // p[1]) * (w // p[2])

    def label(self) -> dict[str, object]:
        """What names the case in a row of its own (one that failed)."""
        return {"model": self.config.model_type, "dim": self.config.dim, "layers": self.config.num_layers,
                "tokens": self.tokens}


def inputs(case: Case, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor | None]:
    """Our forward's arguments: latents, timesteps (per token for ti2v: first frame at 0), text, and
    the i2v image conditioning or the s2v reference, motion, audio and pose inputs."""
    g = torch.Generator().manual_seed(seed)
    c, (f, h, w) = case.config, case.grid
    randn = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    latent_channels = 16 if c.model_type == "i2v" else c.in_dim
    args = {"x": randn(1, latent_channels, f, h, w), "context": randn(1, 120, c.text_dim)}
    if c.model_type == "ti2v":
        t = torch.full((1, case.tokens), 812.0)
        t[:, : case.tokens // (f // c.patch_size[0])] = 0.0
    else:
        t = torch.tensor([812.0])
    args["t"] = t.to(device)
    if c.model_type == "i2v":
        args["y"] = randn(1, c.in_dim - latent_channels, f, h, w)
    if c.model_type == "s2v":
        args.update(ref_latents=randn(1, c.in_dim, 1, h, w),
                    motion_latents=randn(1, c.in_dim, MOTION_FRAMES[1], h, w),
                    audio=randn(1, c.audio_layers, c.audio_dim, f * 4), pose=randn(1, c.cond_dim, f, h, w))
    return args


def official_model(case: Case, ours: WanModel) -> torch.nn.Module:
    """The official class of ``case``'s model with ``ours``'s weights, on the CPU in float32."""
    c = case.config
    if c.model_type == "s2v":
        config = {k: v for k, v in c.to_official_json().items() if not k.startswith("_")}
        ref = official_s2v("model_s2v").WanModel_S2V(**config)
    else:
        names = ("model_type", "in_dim", "out_dim", "dim", "ffn_dim", "num_heads", "num_layers", "text_len",
                 "eps")
        ref = official_module("modules.model").WanModel(**{k: getattr(c, k) for k in names})
    ref.load_state_dict(ours.state_dict())
    return ref.eval().requires_grad_(False)


def official_call(ref: torch.nn.Module, case: Case, args: dict) -> torch.Tensor:
    """The official forward as its pipelines call it; [1, C, F, H, W]."""
    if case.config.model_type == "s2v":
        out = ref(list(args["x"]), t=args["t"], context=list(args["context"]), seq_len=None,
                  ref_latents=args["ref_latents"], motion_latents=args["motion_latents"],
                  cond_states=args["pose"], audio_input=args["audio"], motion_frames=list(MOTION_FRAMES),
                  drop_motion_frames=False)
        return out[0][None]
    t = args["t"].expand(1, case.tokens) if args["t"].dim() == 1 else args["t"]
    y = args.get("y")
    out = ref(list(args["x"]), t, list(args["context"]), case.tokens, y=None if y is None else list(y))
    return out[0][None]


def run_case(
    case: Case, device: torch.device, dtype: torch.dtype, warmup: int, repeat: int, compiled: bool = False
) -> dict:
    model_class = WanModelS2V if case.config.model_type == "s2v" else WanModel
    ours = host_dit(case.config, model_class)
    ref = official_model(case, ours).to(device)
    ours = ours.to(device)
    args = inputs(case, device)
    autocast = (torch.amp.autocast("cuda", dtype=dtype) if device.type == "cuda" and dtype != torch.float32
                else contextlib.nullcontext())

    def ref_forward():
        with autocast:
            return official_call(ref, case, args)

    with torch.no_grad():
        tokens = ours.prepare(**args)[0].shape[1]  # s2v: its reference and motion tokens too
    row = {"model": case.config.model_type, "dim": case.config.dim, "layers": case.config.num_layers,
           "tokens": tokens, "t": "per-token" if args["t"].dim() == 2 else "per-sample",
           "dtype": str(dtype).removeprefix("torch.")}
    with torch.no_grad():
        if dtype != torch.float32:
            truth = ours(**args)
            ref_out = ref_forward()
            ours.set_compute_dtype(dtype)
            ours_out = ours(**args)
            row["err_ours"] = f"{rel_l2(ours_out, truth):.2e}"
            row["err_official"] = f"{rel_l2(ref_out, truth):.2e}"
            row["ours~off"] = f"{rel_l2(ours_out, ref_out):.2e}"
            del truth, ref_out, ours_out
            ref.to(dtype)  # the official --convert_model_dtype mode, its fastest
        else:
            row["ours~off"] = f"{rel_l2(ours(**args), ref_forward()):.2e}"
        official_s = median_seconds(ref_forward, device, warmup, repeat)
        ours_s = median_seconds(lambda: ours(**args), device, warmup, repeat)
        if compiled:
            row.update(time_compiled(ours, args, device, warmup, repeat))
        if dtype != torch.float32:
            ours.set_compute_dtype(dtype, keep_float32=False)
            row["conv~off"] = f"{rel_l2(ours(**args), ref_forward()):.2e}"
    row.update(official_ms=round(official_s * 1e3, 1), ours_ms=round(ours_s * 1e3, 1),
               speedup=round(official_s / ours_s, 3))
    return row


def time_compiled(ours: WanModel, args: dict, device: torch.device, warmup: int, repeat: int) -> dict:
    """A copy of ``ours`` with its blocks compiled: its first call (the compile included), its time
    and that of ``ours`` eager timed in turns with it, the ratio of the two, and its relative
    error against ``ours`` eager."""
    torch._dynamo.reset()  # each row times the static-shape graphs a run at one size compiles
    model = compile_blocks(copy.deepcopy(ours))
    start = time.perf_counter()
    # Compiled here, not loaded from an earlier run's FX graph cache (kernel caches still apply).
    with inductor_config.patch(fx_graph_cache=False):
        out = model(**args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    first_s = time.perf_counter() - start
    seconds = median_seconds_in_turns({"eager": lambda: ours(**args), "compiled": lambda: model(**args)},
                                      device, warmup, repeat)
    return {"first_call_s": round(first_s, 1), "compiled_ms": round(seconds["compiled"] * 1e3, 1),
            "eager_in_turns_ms": round(seconds["eager"] * 1e3, 1),
            "x_eager": round(seconds["eager"] / seconds["compiled"], 3),
            "compiled~ours": f"{rel_l2(out, ours(**args)):.2e}"}


def main() -> None:
    parser = forward_parser(__doc__, "real widths on cuda in bfloat16", layers=2, gpu_layers_only=True)
    parser.add_argument("--compile", action="store_true", help="also time ours with the blocks compiled")
    args = parser.parse_args()
    if args.gpu:
        device, dtype = torch.device("cuda"), torch.bfloat16
        cases = [Case(replace(cfg, num_layers=args.layers), grid)
                 for cfg in (A14B, TI2V_5B) for grid in (GRID_480P, GRID_720P)]
        cases.append(Case(replace(S2V_14B, num_layers=args.layers), GRID_S2V_CLIP))
    else:
        device, dtype = torch.device("cpu"), torch.float32
        cpu_i2v = replace(CPU_SIZE, model_type="i2v", in_dim=36, out_dim=16)
        cases = [Case(CPU_SIZE, (8, 24, 40)), Case(cpu_i2v, (8, 24, 40)), Case(CPU_S2V, (8, 24, 40))]
    columns = ["model", "dim", "layers", "tokens", "t", "dtype", "official_ms", "ours_ms", "speedup",
               "err_ours", "err_official", "ours~off", "conv~off"]
    if args.compile:
        columns += ["compiled_ms", "eager_in_turns_ms", "x_eager", "first_call_s", "compiled~ours"]
    run_cases("bench_dit_compile" if args.compile else "bench_dit", device, cases,
              lambda case: run_case(case, device, dtype, args.warmup, args.repeat, args.compile), columns,
              args.out_dir, label=Case.label)


if __name__ == "__main__":
    main()
