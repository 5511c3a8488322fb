"""The tasks this runtime serves: their checkpoint layout and official sampling defaults.

Values are those of the official ``wan/configs`` for each task; file and folder names are relative
to the task's checkpoint folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models.audio_encoder import WAV2VEC2_DIR, WAV2VEC2_WEIGHTS
from wan_runtime.models.t5_checkpoint import CHECKPOINT_FILE
from wan_runtime.models.text_encoder import TOKENIZER_DIR, TOKENIZER_FILES, TOKENIZER_SPECIALS

# The official default negative prompt (shared by all tasks).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# The official speech-to-video negative prompt (``wan_s2v_14B.sample_neg_prompt``).
S2V_NEGATIVE_PROMPT = (
    "画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，字幕，丑陋的，残缺的，多余的手指，"
    "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，"
    "背景人很多，倒着走"
)


# The DiTs' names in a pipeline and for per-expert LoRAs: the two i2v-A14B experts, the one DiT
# of the other tasks.
HIGH_NOISE, LOW_NOISE, DIT = "high_noise", "low_noise", "dit"


@dataclass(frozen=True)
class TaskSpec:
    """One task's files and defaults.

    ``dit_folders`` lists the DiT folders, highest noise first: the two i2v-A14B experts, or the
    root itself (``"."``) for ti2v-5B. ``cache_models`` names those DiTs for the step cache (its
    report's keys and the models TeaCache's ``poly`` coefficients are fitted for), in that order;
    ``dit_names`` names them for the pipeline (its ``dits``) and for per-expert LoRAs.
    ``guide_scale`` is ``(low_noise, high_noise)`` for the two-expert task, in the official order.
    ``boundary`` is the fraction of the 1000 training timesteps at and above which the high-noise
    expert runs (None: one DiT).
    ``supported_sizes`` are the official ``W*H`` strings the models were trained at.
    ``audio_dir`` is the speech encoder's folder (s2v-14B only); ``frame_num`` is the official
    shared default, which s2v-14B ignores for its per-clip ``infer_frames``.
    """

    name: str
    vae_file: str
    vae_stride: tuple[int, int, int]
    dit_folders: tuple[str, ...]
    cache_models: tuple[str, ...]
    supported_sizes: tuple[str, ...]
    default_size: str
    frame_num: int
    sampling_steps: int
    shift: float
    guide_scale: float | tuple[float, float]
    fps: int
    boundary: float | None = None
    patch_size: tuple[int, int, int] = (1, 2, 2)
    t5_file: str = CHECKPOINT_FILE
    tokenizer_dir: str = TOKENIZER_DIR
    text_len: int = 512
    num_train_timesteps: int = 1000
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    audio_dir: str | None = None
    dit_names: tuple[str, ...] = (DIT,)

    @property
    def model_type(self) -> str:
        """The ``model_type`` in the release DiTs' ``config.json``: ``i2v``, ``ti2v`` or ``s2v``."""
        return self.name.split("-")[0]

    @property
    def release(self) -> str:
        """The official release's repository on Hugging Face and ModelScope (``Wan-AI/Wan2.2-TI2V-5B``)."""
        return f"Wan-AI/Wan2.2-{self.name.upper()}"


TASKS = {
    "i2v-A14B": TaskSpec(
        name="i2v-A14B",
        vae_file="Wan2.1_VAE.pth",
        vae_stride=(4, 8, 8),
        dit_folders=("high_noise_model", "low_noise_model"),
        cache_models=("high", "low"),
        supported_sizes=("720*1280", "1280*720", "480*832", "832*480"),
        default_size="1280*720",
        frame_num=81,
        sampling_steps=40,
        shift=5.0,
        guide_scale=(3.5, 3.5),
        fps=16,
        boundary=0.900,
        dit_names=(HIGH_NOISE, LOW_NOISE),
    ),
    "ti2v-5B": TaskSpec(
        name="ti2v-5B",
        vae_file="Wan2.2_VAE.pth",
        vae_stride=(4, 16, 16),
        dit_folders=(".",),
        cache_models=("ti2v",),
        supported_sizes=("704*1280", "1280*704"),
        default_size="1280*704",
        frame_num=121,
        sampling_steps=50,
        shift=5.0,
        guide_scale=5.0,
        fps=24,
    ),
    "s2v-14B": TaskSpec(
        name="s2v-14B",
        vae_file="Wan2.1_VAE.pth",
        vae_stride=(4, 8, 8),
        dit_folders=(".",),
        cache_models=("s2v",),
        supported_sizes=(
            "720*1280", "1280*720", "480*832", "832*480", "1024*704", "704*1024", "704*1280", "1280*704",
        ),
        # The official generate.py's --size default, which is an s2v-14B size.
        default_size="1280*720",
        frame_num=81,
        sampling_steps=40,
        shift=3.0,
        guide_scale=4.5,
        fps=16,
        negative_prompt=S2V_NEGATIVE_PROMPT,
        audio_dir=WAV2VEC2_DIR,
    ),
}


def required_files(spec: TaskSpec) -> list[tuple[str, ...]]:
    """Files a complete checkpoint folder of ``spec`` holds, relative to it: at least one of each
    tuple (DiT folders by their ``config.json``; their weights are checked before they load)."""

    def one_of(folder: str, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(PurePosixPath(folder) / name) for name in names)

    dits = [one_of(folder, ("config.json",)) for folder in spec.dit_folders]
    audio = [] if spec.audio_dir is None else [
        one_of(spec.audio_dir, ("config.json",)), one_of(spec.audio_dir, ("preprocessor_config.json",)),
        one_of(spec.audio_dir, WAV2VEC2_WEIGHTS),
    ]
    tokenizer = [one_of(spec.tokenizer_dir, TOKENIZER_FILES), one_of(spec.tokenizer_dir, TOKENIZER_SPECIALS)]
    return [(spec.t5_file,), *tokenizer, (spec.vae_file,), *dits, *audio]


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task``; ``InputError`` naming the served tasks for another."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def check_checkpoint_dir(task: str, ckpt_dir: str | Path) -> TaskSpec:
    """The task's spec, after checking that ``ckpt_dir`` holds every file the task needs.

    Raises ``InputError`` for an unknown task and ``CheckpointError`` listing every missing path.
    """
    spec, root = task_spec(task), Path(ckpt_dir)
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "does not exist"
        raise CheckpointError(f"checkpoint folder {root} {problem}; pass the folder of the {task} release "
                              f"({spec.release})")
    try:
        missing = _missing_files(spec, root)
    except PermissionError as err:  # a folder this user may not read: is_file does not say False
        raise CheckpointError(f"checkpoint folder {root}: {err.filename} cannot be read (permission denied); "
                              "give this user read access to the release folder") from None
    if missing:
        # Most often the folder is complete, for another task than the one asked for.
        others = [name for name, other in TASKS.items() if name != task and not _missing_files(other, root)]
        if others:
            remedy = (f"it holds the {others[0]} release: give that task (--task {others[0]} on the command "
                      "line)")
        elif (root / "model_index.json").is_file():
            remedy = (f"it is in diffusers' layout (model_index.json), and wan_runtime reads the official "
                      f"one: download the repository without -Diffusers ({spec.release} for {task})")
        else:
            remedy = f"download the whole official release folder ({spec.release})"
        raise CheckpointError(
            f"{root} is not a complete {task} checkpoint folder: missing {', '.join(missing)}; {remedy}"
        )
    return spec


def _missing_files(spec: TaskSpec, root: Path) -> list[str]:
    """The files of ``required_files(spec)`` that ``root`` lacks, alternatives joined by "or"."""
    return [" or ".join(names) for names in required_files(spec)
            if not any((root / name).is_file() for name in names)]
