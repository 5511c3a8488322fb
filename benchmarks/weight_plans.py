"""The GPU memory of each task at the release's sizes, under the memory flags, from the same plan
and estimate ``--dry_run`` prints (``wan_runtime.pipelines.memory_plan``, ``activation_memory``)
built on meta-device models of the release architectures: no checkpoint is needed, and nothing is
measured.

    python -m benchmarks.weight_plans [--out-dir DIR]

Columns: the task, the flags (one GPU, bfloat16; or a torchrun launch over N GPUs, each process's
share: its weights and, split N ways, its tokens), the most GiB of weights on the GPU at once
(``peak_GiB``) and the models there then (``at_the_peak``), the most GiB of weights in CPU memory
at once (``cpu_GiB``, ``wan_runtime.pipelines.host_memory``); then the peak of the task's release
video (``RELEASE_VIDEOS``), weights and activations, at least (``video_GiB``), its stage
(``video_stage``), and the same with ``--vae_tiling`` (``tiled_GiB``, ``tiled_stage``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import print_table, save_results
from benchmarks.release_configs import A14B, S2V_14B, TI2V_5B
from wan_runtime.checks import DEFAULT_VAE_TILE
from wan_runtime.cli_parser import DEFAULT_INFER_FRAMES
from wan_runtime.models import WanModel
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.models.t5_checkpoint import T5Sizes
from wan_runtime.models.umt5 import meta_encoder
from wan_runtime.models.vae2_1 import build_vae21
from wan_runtime.models.vae2_2 import build_vae22
from wan_runtime.pipelines import I2VPipeline, S2VPipeline, VideoShape, estimate_memory
from wan_runtime.pipelines.activation_memory import speech_video
from wan_runtime.pipelines.host_memory import host_plan
from wan_runtime.pipelines.memory_plan import PlanOptions, WeightPlan, plan_models
from wan_runtime.tasks import task_spec

UMT5_XXL = T5Sizes(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24,
                   num_buckets=32)
# wav2vec2-large-xlsr-53-english, the s2v-14B release's speech encoder.
WAV2VEC2_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                  "intermediate_size": 4096, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
                  "conv_bias": True, "vocab_size": 33}
# The flags of each row, from every model on the GPU to the fewest bytes there.
FLAGS = {
    "--offload_model False": {"offload_model": False},
    "(default: --offload_model True)": {},
    "--t5_cpu": {"t5_cpu": True},
    "--t5_cpu --dit_fp8": {"t5_cpu": True, "dit_fp8": True},
    "--t5_cpu --stream_blocks 99 (all but one)": {"t5_cpu": True, "stream_blocks": 99},
    "--t5_cpu --dit_fp8 --stream_blocks 99": {"t5_cpu": True, "dit_fp8": True, "stream_blocks": 99},
}
# A torchrun launch over N GPUs with every several-GPU flag (the models stay on the GPUs, as
# torchrun's default --offload_model False keeps them).
SEVERAL_GPUS = {f"torchrun x{n}: --ulysses_size {n} --dit_fsdp --t5_fsdp":
                {"offload_model": False, "dit_fsdp": True, "t5_fsdp": True, "world": n} for n in (2, 4, 8)}
_GIB = 2**30


DITS = {"i2v-A14B": A14B, "ti2v-5B": TI2V_5B, "s2v-14B": S2V_14B}
# 10 s of speech: two clips of s2v-14B's 80 frames, the second with its motion.
SPEECH_SAMPLES = 160_000


def release_video(task: str, vae_tiling: int = 0) -> VideoShape:
    """The task's video at the release size and defaults: i2v-A14B from a 16:9 image, 81 frames;
    ti2v-5B from text, 121 frames; s2v-14B from a 16:9 image and ``SPEECH_SAMPLES`` of speech."""
    spec = task_spec(task)
    width, height = (int(n) for n in spec.default_size.split("*"))
    picture = Image.new("RGB", (width, height))
    if task == "i2v-A14B":
        width, height = I2VPipeline.output_size(spec, picture, width, height)
        return VideoShape(width, height, spec.frame_num, True, spec.guide_scale, vae_tiling)
    if task == "s2v-14B":
        width, height = S2VPipeline.output_size(spec, picture, width, height)
        return speech_video(width, height, DEFAULT_INFER_FRAMES, spec.guide_scale, vae_tiling, SPEECH_SAMPLES,
                            None, False, False, spec.fps)
    return VideoShape(width, height, spec.frame_num, False, spec.guide_scale, vae_tiling)


def release_plan(task: str, **flags: object) -> WeightPlan:
    """``task``'s plan on one GPU in bfloat16 under ``flags`` (``load_pipeline``'s arguments; with
    ``world``, one process's of a launch over that many)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    spec = task_spec(task)
    config = DITS[task]
    with torch.device("meta"):
        vae = build_vae22() if spec.vae_file == "Wan2.2_VAE.pth" else build_vae21()
        dit_class = WanModelS2V if spec.audio_dir is not None else WanModel
        dits = {name: dit_class(config) for name in spec.dit_names}
        audio = None if spec.audio_dir is None else Wav2Vec2Model(Wav2Vec2Config(**WAV2VEC2_LARGE))
    options = PlanOptions(**{"dtype": torch.bfloat16, "offload_model": True, "t5_cpu": False,
                             "convert_model_dtype": False, "dit_fsdp": False, "t5_fsdp": False,
                             "stream_blocks": 0, "dit_fp8": False, **flags})
    return plan_models(torch.device("cuda"), vae, meta_encoder(UMT5_XXL), dits, audio, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=None, help="JSON folder (default benchmarks/results)")
    args = parser.parse_args()
    rows = []
    for task in ("i2v-A14B", "ti2v-5B", "s2v-14B"):
        for name, flags in {**FLAGS, **SEVERAL_GPUS}.items():
            plan = release_plan(task, **flags)
            row = {"task": task, "flags": name, "peak_GiB": round(plan.peak / _GIB, 2),
                   "at_the_peak": ", ".join(plan.peak_models),
                   "cpu_GiB": round(host_plan(plan).peak / _GIB, 2)}
            for column, tile in (("video", 0), ("tiled", DEFAULT_VAE_TILE)):
                estimate = estimate_memory(plan, task_spec(task), release_video(task, tile),
                                           ulysses=flags.get("world", 1))
                row.update({f"{column}_GiB": round(estimate.peak / _GIB, 2),
                            f"{column}_stage": f"{estimate.busiest.stage} ({estimate.busiest.model})"})
            rows.append(row)
            print(row, flush=True)
    print_table(rows, ["task", "flags", "peak_GiB", "at_the_peak", "cpu_GiB", "video_GiB", "video_stage",
                       "tiled_GiB", "tiled_stage"])
    out_dir = Path(args.out_dir) if args.out_dir else None
    print("saved", save_results("weight_plans", torch.device("cpu"), rows, out_dir))


if __name__ == "__main__":
    main()
