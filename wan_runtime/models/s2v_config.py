"""The S2V DiT's architecture, read from the official ``Wan2.2-S2V-14B/config.json`` and tensor shapes.

The official ``WanModel_S2V`` constructor has switches for several research variants; the release
sets them to one combination, and only that one is implemented here:

    enable_adain=true, adain_mode="attn_norm"   audio AdaLN from the global audio token
    zero_timestep=true                          reference and motion tokens see timestep 0
    enable_framepack=true, enable_motioner=false  motion frames as FramePack tokens
    add_last_motion=true                        every FramePack bucket is kept
    cond_dim > 0                                the pose encoder (its forward always runs it)

Any other value is refused with a ``CheckpointError``. ``framepack_drop_mode``, ``zero_init``,
``enable_tsm``, ``trainable_token_pos_emb`` and ``motion_token_num`` do not change this path
(initialisation only, or options of the unused motioner), so any value is accepted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from wan_runtime.errors import CheckpointError
from wan_runtime.models.dit_config import DiTConfig

RELEASE_INJECT_LAYERS = (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39)
_REQUIRED_KEYS = (
    "dim", "ffn_dim", "freq_dim", "in_dim", "out_dim", "num_heads", "num_layers",
    "audio_dim", "num_audio_token", "audio_inject_layers", "cond_dim",
)
# (key, the official default, the value this runtime implements)
_FIXED_SWITCHES = (
    ("enable_adain", False, True),
    ("adain_mode", "attn_norm", "attn_norm"),
    ("zero_timestep", False, True),
    ("enable_framepack", False, True),
    ("enable_motioner", True, False),
    ("add_last_motion", True, True),
)


@dataclass(frozen=True)
class S2VConfig(DiTConfig):
    """Sizes of the S2V DiT: the Wan DiT's plus the audio, pose and motion parts.

    ``audio_layers`` (wav2vec2 hidden states, 25 for the large model) is read from the tensor
    ``casual_audio_encoder.weights``; the official ``config.json`` does not record it.
    """

    model_type: str = "s2v"
    in_dim: int = 16
    out_dim: int = 16
    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    audio_dim: int = 1024
    audio_layers: int = 25
    num_audio_token: int = 4
    audio_inject_layers: tuple[int, ...] = RELEASE_INJECT_LAYERS
    cond_dim: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        layers = self.audio_inject_layers
        if len(set(layers)) != len(layers) or not all(0 <= i < self.num_layers for i in layers):
            raise ValueError(
                f"audio_inject_layers {list(layers)} must be distinct blocks of 0..{self.num_layers - 1}"
            )
        # The official model finds its injection blocks by substring: layer 1 also claims blocks
        # 10-19. Such a list would wire blocks differently from what it says, so it is refused.
        shadowed = [i for i in layers for j in range(self.num_layers) if j != i and str(j).startswith(str(i))]
        if shadowed:
            raise ValueError(f"audio_inject_layers {sorted(set(shadowed))} also match other blocks' names "
                             "in the official model, which then injects differently")
        if self.cond_dim <= 0:
            raise ValueError("cond_dim must be positive: the official forward always encodes cond_states")

    def to_official_json(self) -> dict:
        """The ``config.json`` content the official ``save_pretrained`` writes for this config."""
        fields = asdict(self)
        for omitted in ("patch_size", "text_dim", "qk_norm", "cross_attn_norm", "audio_layers"):
            fields.pop(omitted)
        switches = {key: value for key, _, value in _FIXED_SWITCHES}
        inert = {"zero_init": True, "enable_tsm": False, "trainable_token_pos_emb": False,
                 "motion_token_num": 1024, "framepack_drop_mode": "padd"}
        fields["audio_inject_layers"] = list(self.audio_inject_layers)
        return {"_class_name": "WanModel_S2V", "_diffusers_version": "0.33.0", **fields, **switches, **inert}


def check_s2v_config_json(raw: dict, path: Path) -> None:
    """Refuse an S2V ``config.json`` that is incomplete or selects a variant not implemented here."""
    if raw.get("model_type", "s2v") != "s2v":
        raise CheckpointError(
            f"{path} names model_type {raw['model_type']!r}, not 's2v'; point to the Wan2.2-S2V-14B "
            "folder (other tasks' DiTs load with WanModel)"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; restore config.json from the S2V release")
    for key, default, implemented in _FIXED_SWITCHES:
        if raw.get(key, default) != implemented:
            raise CheckpointError(
                f"{path} sets {key}={raw.get(key, default)!r}; this runtime implements the released S2V "
                f"model only ({key}={implemented!r}); restore config.json from the S2V release"
            )


def s2v_config_from_checkpoint(dit: DiTConfig, raw: dict, shapes: dict[str, tuple[int, ...]],
                               source: Path) -> S2VConfig:
    """Extend the Wan DiT sizes ``dit`` (from ``config_from_checkpoint``) with the S2V ones."""
    weights = shapes.get("casual_audio_encoder.weights")
    if weights is None or len(weights) != 4:
        raise CheckpointError(
            f"{source} has no tensor 'casual_audio_encoder.weights' of shape [1, layers, 1, 1]; it is "
            "not an S2V DiT checkpoint or it is incomplete; download the folder again"
        )
    try:
        return S2VConfig(
            **{**asdict(dit), "model_type": "s2v"},
            audio_dim=int(raw["audio_dim"]),
            audio_layers=weights[1],
            num_audio_token=int(raw["num_audio_token"]),
            audio_inject_layers=tuple(int(i) for i in raw["audio_inject_layers"]),
            cond_dim=int(raw["cond_dim"]),
        )
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{source}: {err}; restore config.json from the S2V release") from err
