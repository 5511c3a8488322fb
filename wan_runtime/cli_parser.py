"""The ``wan_runtime.generate`` command line's flags: the parser, its defaults, and the conversion of
a flag's value given as JSON (a ``--batch`` line's, a video's recorded flags) as the parser would.

Flags, defaults and meanings follow the official ``generate.py`` for the tasks served here; see
``build_parser`` for where they differ. The values are checked by ``wan_runtime.cli_args.resolve``,
so that every problem is listed together.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
from collections.abc import Iterable

import torch

from wan_runtime import demo
from wan_runtime.cache.config import FB_METRICS, TEACACHE_POLICIES, CacheConfig
from wan_runtime.checks import DEFAULT_VAE_TILE, MAX_INFER_FRAMES, VAE_TILE_MULTIPLE
from wan_runtime.distributed.launch import Launch
from wan_runtime.errors import InputError
from wan_runtime.solvers import SOLVER_NAMES as SOLVERS
from wan_runtime.tasks import TASKS

DEFAULT_TASK = "ti2v-5B"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
DEFAULT_DTYPE = "bfloat16"
DEFAULT_SOLVER = "unipc"

# The official generate.py's s2v default: frames per clip.
DEFAULT_INFER_FRAMES = 80
# The official generate.py's animate-14B default of --refert_num (a task not served here).
OFFICIAL_REFERT_NUM = 77


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # The processes of a torchrun launch parse the same command line: one per machine tells.
        try:
            quiet = not Launch.from_env().speaks_for_machine
        except InputError:  # not a launch torchrun would make: told as the command line is checked
            quiet = False
        self.exit(2, None if quiet else f"error: {message}{self._hints(message)} (see --help)\n")

    def _hints(self, message: str) -> str:
        """For each unknown flag the known one it most resembles (``--seed``: ``--base_seed``)."""
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown == message:
            return ""
        flags = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
        hints = [f"{word}{hint}" for word in dict.fromkeys(w.split("=", 1)[0] for w in unknown.split())
                 if word.startswith("--") and (hint := did_you_mean(word, flags))]
        return "".join(f"; {hint}" for hint in hints)


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``: did you mean X?`` with the one of ``known`` most like ``word``, or "" when none is."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f": did you mean {close[0]}?" if close else ""


def str2bool(value: str) -> bool:
    """The official ``str2bool``: yes/true/t/y/1 and no/false/f/n/0, any case."""
    lowered = value.lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected (True/False)")


_KINDS = {int: "a whole number", float: "a number"}
# The flags that give LoRA files, one per value.
LORA_FLAGS = ("lora", "lora_high_noise", "lora_low_noise")


def json_flag_value(key: str, value: object, action: argparse.Action) -> object:
    """The JSON ``value`` given for flag ``key`` (a ``--batch`` line's, a video's recorded flags),
    converted as the command line would convert it; ``null`` is the flag's default. Raises
    ``TypeError`` or ``ValueError`` naming the flag and what it takes."""
    if value is None:  # the flag's own default (not the command line's value, nor a video's)
        return copy.copy(action.default)
    if isinstance(value, str) and "\0" in value:  # no command line can pass one; paths refuse it
        raise ValueError(f"{key} holds a NUL character, which no flag takes")
    if action.nargs == "?" and isinstance(value, bool):  # as the flag alone, or as not given
        return action.const if value else copy.copy(action.default)
    if action.nargs == 0 or action.type is str2bool:  # an on/off flag
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be true or false, got {json.dumps(value)}")
        return value
    if isinstance(action.default, list):  # a flag given once per value
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise TypeError(f"{key} must be a list of strings, got {json.dumps(value)}")
        return list(value)
    if isinstance(value, (bool, list, dict)):
        raise TypeError(f"{key} must be a string or a number, got {json.dumps(value)}")
    if action.type is None:
        return str(value)
    try:
        return action.type(str(value))
    except ValueError:
        raise ValueError(f"{key} must be {_KINDS[action.type]}, got {json.dumps(value)}") from None


def _differences() -> str:
    """The end of ``--help``: how the command line differs from the official ``generate.py`` (each
    time because the official behaviour cannot work here) and what it adds."""
    sizes = ", ".join(f"{spec.default_size} for {spec.name}" for spec in TASKS.values())
    return (
        "Differences from the official generate.py: --task defaults to "
        f"{DEFAULT_TASK} (the official default, t2v-A14B, is not served); --size defaults to the task's "
        f"own size ({sizes}; the official default is 1280*720 for every task, which ti2v-5B does not "
        "support); i2v-A14B and s2v-14B require --image and s2v-14B requires --audio (the official "
        "script falls back to its example files, which are not shipped); --save_file must end in .mp4; "
        "the official flags of features not served here "
        "(--use_prompt_extend, the TTS and animate flags) are "
        "refused unless left at their official defaults (the --prompt_extend_* settings are ignored, as the "
        "official script ignores them without --use_prompt_extend). Added: --device, --dtype, --compile, "
        "--cuda_graphs, "
        "--debug, --dry_run, --verify_checkpoint, --batch, --skip_existing, --demo, --settings_from, "
        "--negative_prompt, --stream_blocks, --fit_memory, --no-t5_cpu, --dit_fp8, --vae_tiling, the LoRA "
        "flags and the step cache flags."
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser: the official ``generate.py``'s flags and defaults but for the differences its
    epilog lists (``_differences``), and the flags added here (``--device``, ``--dtype``,
    ``--compile``, ``--cuda_graphs``, ``--debug``, ``--dry_run``, ``--verify_checkpoint``, ``--batch``,
    ``--skip_existing``, ``--demo``, ``--settings_from``, ``--negative_prompt``, ``--stream_blocks``,
    ``--fit_memory``, ``--dit_fp8``, ``--vae_tiling``, ``--lora*`` and the step cache flags
    ``--teacache*``, ``--fbcache``, ``--fb_*``; see ``wan_runtime.cache.CacheConfig``).
    Task, size, solver, device and dtype are checked by ``resolve`` so all problems are listed
    together."""
    d = demo.DEMO_SETTINGS
    p = _Parser(
        prog="python -m wan_runtime.generate",
        description="Generate a video with Wan2.2: text (and optionally an image) to video with ti2v-5B, "
                    "image to video with i2v-A14B, speech-to-video (speech and a reference image) with "
                    "s2v-14B.",
        epilog=_differences(),
    )
    p.add_argument("--task", default=DEFAULT_TASK,
                   help=f"{', '.join(TASKS)} (default {DEFAULT_TASK}; the official default t2v-A14B is not "
                        "served)")
    p.add_argument("--size", default=None,
                   help="width*height of the video, one of the task's supported sizes (default: the "
                        f"task's own; --demo: {d.default_size}); with --image the video takes the image's "
                        "aspect ratio within this area")
    p.add_argument("--frame_num", type=int, default=None,
                   help=f"frames to generate, 4n+1 (default: the task's; --demo: {d.frame_num}); s2v-14B "
                        "ignores it, with a warning: its video follows the audio, --infer_frames frames "
                        "per clip")
    p.add_argument("--ckpt_dir", default=None, help="the task's official checkpoint folder")
    p.add_argument("--offload_model", type=str2bool, default=None,
                   help="move each model to the CPU after use to save GPU memory (default True; False "
                        "under torchrun)")
    p.add_argument("--t5_cpu", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the T5 text encoder on the CPU (default off; --no-t5_cpu keeps it off under "
                        "--fit_memory)")
    p.add_argument("--stream_blocks", type=int, default=None, metavar="N",
                   help="keep the last N blocks of each DiT in CPU memory, each copied to the GPU just "
                        "before it runs: N x ~0.7 GB less GPU memory for a 14B DiT in bf16, the same video "
                        "(default 0; at most all blocks but the first stream)"),
    # Given alone it is True (argparse converts a string const): the GPU's free memory.
    p.add_argument("--fit_memory", type=float, nargs="?", const=True, default=None, metavar="GIB",
                   help="choose --offload_model, --stream_blocks and, as a last resort, --t5_cpu (those not "
                        "given) for the fastest run whose every video fits GIB of GPU memory by the estimate "
                        "--dry_run prints, with room for the kernels' workspaces (default when given alone: "
                        "the GPU's free memory less 1 GiB); never the lossy --dit_fp8 or --vae_tiling: when "
                        "nothing fits it says what would"),
    p.add_argument("--dit_fp8", action=argparse.BooleanOptionalAction, default=False,
                   help="store the DiT blocks' weights in 8-bit floats (float8_e4m3fn, a scale per row) and "
                        "compute in --dtype: half the memory of bf16 DiTs (a 14B DiT in 14 GiB instead of "
                        "27), but the video is not the official one (lossy)")
    p.add_argument("--vae_tiling", type=int, nargs="?", const=DEFAULT_VAE_TILE, default=0, metavar="PIXELS",
                   help=f"decode the video in overlapping tiles of PIXELS (default {DEFAULT_VAE_TILE} when "
                        f"given alone; a multiple of {VAE_TILE_MULTIPLE}; 0: whole frames, the default): "
                        "about half the decode's memory (a 720p decode in ~8 GiB instead of ~17), but not "
                        "the official video (each tile's decoder sees only its tile)")
    p.add_argument("--convert_model_dtype", action=argparse.BooleanOptionalAction, default=False,
                   help="convert the DiT weights to the compute dtype")
    p.add_argument("--save_file", default=None,
                   help="output .mp4 (default: <task>_<size>_<ulysses_size>_<prompt>_<time>.mp4 in the "
                        "current folder)")
    p.add_argument("--prompt", default=None, help="the prompt (default: the official example prompt)")
    p.add_argument("--negative_prompt", default=None,
                   help="what guidance steers the video away from (default: the task's official negative "
                        "prompt, in Chinese, as the official script uses; an empty one keeps it)")
    p.add_argument("--base_seed", type=int, default=-1, help="seed; negative picks a random one (default -1)")
    p.add_argument("--image", default=None,
                   help="input image: required for i2v-A14B (the first frame) and s2v-14B (the speaker's "
                        "reference image), optional for ti2v-5B")
    p.add_argument("--sample_solver", default=None,
                   help=f"{', '.join(SOLVERS[:-1])} or {SOLVERS[-1]} (default {DEFAULT_SOLVER}; euler with "
                        "--lora_dir); euler is the sampler the Wan2.2-Lightning LoRAs were distilled with "
                        "(use it with their 4 steps, --sample_shift 5 and --sample_guide_scale 1)")
    p.add_argument("--sample_steps", type=int, default=None,
                   help=f"sampling steps (default: the task's; --demo: {d.sampling_steps})")
    p.add_argument("--sample_shift", type=float, default=None, help="flow shift (default: the task's)")
    p.add_argument("--sample_guide_scale", type=float, default=None,
                   help="classifier-free guidance scale (default: the task's)")
    p.add_argument("--device", default=None,
                   help=f"cpu, cuda or cuda:N (default cuda when available, else cpu; --demo: {d.device})")
    p.add_argument("--dtype", default=None,
                   help=f"{' or '.join(DTYPES)} (default {DEFAULT_DTYPE}; --demo: {d.dtype})")
    p.add_argument("--compile", action="store_true",
                   help="compile the DiT blocks with torch.compile (the first step pays the "
                        "compile time, as does the first video of another size; needs a C++ compiler "
                        "on the CPU, Triton on a GPU)")
    p.add_argument("--cuda_graphs", action=argparse.BooleanOptionalAction, default=False,
                   help="run the DiT blocks from CUDA graphs, captured at their second call of each kind "
                        "(the same numbers, without the host's kernel launches between; more memory: a copy "
                        "of the blocks' input and of their output, and the graphs' pool); not with "
                        "--stream_blocks, --dit_fsdp or --ulysses_size")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--dry_run", action="store_true",
                   help="check every argument and file as a run would (the checkpoint's configs, headers "
                        "and archives, the LoRAs and their fit), print what it would make, and exit "
                        "without loading a model")
    p.add_argument("--verify_checkpoint", action="store_true",
                   help="first hash every file the task reads from --ckpt_dir (30-70 GB) and compare each "
                        "with the digest its Hugging Face download recorded (hf download --local-dir, the "
                        "hub's cache, or a git clone's index): a file that differs stops the run, one "
                        "without a record has its SHA-256 printed (with --dry_run, no model loads)")
    p.add_argument("--skip_existing", action="store_true",
                   help="make no video whose --save_file (a --batch line's save_file) already exists, as "
                        "when running an interrupted batch again")
    p.add_argument("--batch", default=None, metavar="FILE",
                   help="make one video per line of this JSON Lines file, loading the models once: each "
                        "line a JSON object of per-video flags without their dashes (prompt, image, "
                        "base_seed, save_file, size, ...), the command line's values for what it leaves out")
    p.add_argument("--demo", action="store_true",
                   help="run on tiny random weights (cached) on the CPU to check the installation")
    p.add_argument("--settings_from", default=None, metavar="VIDEO",
                   help="make a video again from the flags stored in VIDEO (an MP4 this command wrote): its "
                        "task, checkpoint, prompts, seed, inputs, size, frames, sampling, dtype, LoRAs and "
                        "step cache, for each flag not given here (add --base_seed 7 for the same video with "
                        "another seed; --no-teacache, --image '' and the like leave the video's out)")
    _add_s2v_flags(p)
    _add_lora_flags(p)
    _add_parallel_flags(p)
    _add_cache_flags(p)
    _add_unsupported_flags(p)
    return p


def _add_unsupported_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("official flags of features not served here (refused unless at their official "
                             "defaults; the --prompt_extend_* settings ignored)")
    g.add_argument("--use_prompt_extend", action="store_true", help="not supported")
    # The official choices, so that a script the official parser refuses is refused here too.
    g.add_argument("--prompt_extend_method", default="local_qwen", choices=("dashscope", "local_qwen"),
                   help="unused: no prompt extension")
    g.add_argument("--prompt_extend_model", default=None, help="unused: no prompt extension")
    g.add_argument("--prompt_extend_target_lang", default="zh", choices=("zh", "en"),
                   help="unused: no prompt extension")
    g.add_argument("--src_root_path", default=None, help="animate-14B only; not served")
    g.add_argument("--refert_num", type=int, default=OFFICIAL_REFERT_NUM,
                   help=f"animate-14B only; not served (its official default {OFFICIAL_REFERT_NUM} is "
                        "accepted)")
    for flag in ("--replace_flag", "--use_relighting_lora"):
        g.add_argument(flag, action="store_true", help="animate-14B only; not served")


def _add_lora_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRA (merged into the DiT weights as they load: a step costs what it did)")
    g.add_argument("--lora", action="append", default=[], metavar="PATH[=STRENGTH]",
                   help="a .safetensors LoRA for every DiT of the task, at STRENGTH (default 1); repeat "
                        "for several (their changes add up)")
    g.add_argument("--lora_dir", default=None, metavar="DIR[=STRENGTH]",
                   help="a Wan2.2-Lightning LoRA folder, as that release's generate.py takes it: for "
                        "i2v-A14B its high_noise_model.safetensors and low_noise_model.safetensors, one per "
                        "expert; for ti2v-5B its diffusion_pytorch_model.safetensors (at STRENGTH, "
                        "default 1); the sampling flags not given take the release's settings: "
                        "--sample_solver euler --sample_steps 4 --sample_shift 5 --sample_guide_scale 1")
    for expert in ("high_noise", "low_noise"):
        g.add_argument(f"--lora_{expert}", action="append", default=[], metavar="PATH[=STRENGTH]",
                       help=f"i2v-A14B: a LoRA for the {expert.replace('_', '-')} expert alone (e.g. the "
                            f"Wan2.2-Lightning {expert}_model.safetensors)")


def _add_parallel_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several GPUs: start one process per GPU with torchrun --nproc_per_node N (e.g. "
                             "torchrun --nproc_per_node 8 -m wan_runtime.generate ... --dit_fsdp --t5_fsdp "
                             "--ulysses_size 8); rank 0 writes the video")
    g.add_argument("--ulysses_size", type=int, default=1,
                   help="split every DiT forward's tokens over this many processes, all of them (Ulysses "
                        "sequence parallelism; default 1)")
    g.add_argument("--dit_fsdp", action="store_true",
                   help="shard the DiT weights over the processes (FSDP); every DiT weight is then used in "
                        "--dtype, as with --convert_model_dtype, as the official FSDP does")
    g.add_argument("--t5_fsdp", action="store_true",
                   help="shard the T5 text encoder's weights over the processes")


def _add_s2v_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speech to video (s2v-14B)")
    g.add_argument("--audio", default=None,
                   help="the speech driving the video (required): any audio file ffmpeg reads")
    g.add_argument("--num_clip", type=int, default=None,
                   help="at most this many clips (default: as many as the audio needs)")
    g.add_argument("--infer_frames", type=int, default=None,
                   help=f"frames per clip, a multiple of 4 from 4 to {MAX_INFER_FRAMES} (default "
                        f"{DEFAULT_INFER_FRAMES}; --demo: {demo.DEMO_SETTINGS.infer_frames})")
    g.add_argument("--pose_video", default=None,
                   help="a pose video whose motion the speaker follows, read from its start at 16 fps "
                        "(any video file ffmpeg reads)")
    g.add_argument("--start_from_ref", action=argparse.BooleanOptionalAction, default=False,
                   help="start the video from the reference image (--image) as its first frame")
    g.add_argument("--enable_tts", action="store_true", help="not supported: text-to-speech is out of scope")
    for flag in ("--tts_prompt_audio", "--tts_prompt_text", "--tts_text"):
        g.add_argument(flag, default=None, help="not supported: text-to-speech is out of scope")


def _add_cache_flags(p: argparse.ArgumentParser) -> None:
    # Unset flags stay None, so that a setting given without its cache can be refused; the
    # values come from CacheConfig's defaults.
    d = CacheConfig()
    g = p.add_argument_group("step cache (reuse transformer work between steps; off by default)")
    # --no-...: off, where --settings_from's video or a --batch line's command line has it on.
    g.add_argument("--teacache", action=argparse.BooleanOptionalAction, default=None,
                   help="enable TeaCache (--no-teacache: off, as is the default)")
    g.add_argument("--teacache_thresh", type=float, default=None,
                   help=f"skip while the accumulated change is under this (default {d.teacache_thresh})")
    g.add_argument("--teacache_policy", default=None,
                   help=f"{' or '.join(TEACACHE_POLICIES)} (default {d.teacache_policy})")
    g.add_argument("--teacache_warmup", type=int, default=None,
                   help=f"first steps of each expert always computed (default {d.teacache_warmup})")
    g.add_argument("--teacache_last_steps", type=int, default=None,
                   help=f"last steps of each expert always computed (default {d.teacache_last_steps})")
    g.add_argument("--teacache_alternating", action=argparse.BooleanOptionalAction, default=None,
                   help="never skip two steps in a row")
    g.add_argument("--fbcache", action=argparse.BooleanOptionalAction, default=None,
                   help="enable the first-block cache (takes precedence; --no-fbcache: off, as is the "
                        "default)")
    g.add_argument("--fb_thresh", type=float, default=None,
                   help=f"skip while the first-block change is under this (default {d.fb_thresh})")
    g.add_argument("--fb_metric", default=None,
                   help=f"{', '.join(FB_METRICS)} (default {d.fb_metric})")
    g.add_argument("--fb_downsample", type=int, default=None,
                   help=f"measure every n-th token (default {d.fb_downsample})")
    g.add_argument("--fb_ema", type=float, default=None,
                   help=f"EMA weight of the previous metric, in [0, 1) (default {d.fb_ema})")
    g.add_argument("--fb_warmup", type=int, default=None,
                   help=f"first steps of each expert always computed (default {d.fb_warmup})")
    g.add_argument("--fb_last_steps", type=int, default=None,
                   help=f"last steps of each expert always computed (default {d.fb_last_steps})")
    g.add_argument("--fb_cfg_sep_diff", type=str2bool, default=None,
                   help="also measure the uncond branch's change (default true)")
