"""The DiT's architecture, read from an official ``config.json`` and the checkpoint's tensor shapes.

The official ``config.json`` omits ``text_dim``, ``patch_size``, ``qk_norm``, ``cross_attn_norm``
and ``window_size`` (diffusers' ``ignore_for_config``); they are taken from the tensors instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from wan_runtime.errors import CheckpointError
from wan_runtime.models.block_numbers import numbered_blocks

SUPPORTED_MODEL_TYPES = ("i2v", "ti2v")
# The most context tokens a config may pad prompts to: 128 times the release's, and a context of
# hundreds of megabytes a forward at the DiTs' widths, not terabytes.
MAX_TEXT_LEN = 1 << 16
_REQUIRED_KEYS = ("dim", "ffn_dim", "freq_dim", "in_dim", "out_dim", "num_heads", "num_layers")


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of a Wan DiT. Field names are the official ``WanModel`` constructor's."""

    model_type: str = "ti2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 48
    dim: int = 3072
    ffn_dim: int = 14336
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 48
    num_heads: int = 24
    num_layers: int = 30
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.num_heads < 1 or self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(
                f"dim {self.dim} must split into {self.num_heads} heads of even size"
            )
        # The prompt's context is padded to text_len tokens (the release's 512) for every forward.
        if not 1 <= self.text_len <= MAX_TEXT_LEN:
            raise ValueError(f"text_len must be a token count from 1 to {MAX_TEXT_LEN:,} (the release's is "
                             f"512), got {self.text_len}")
        if not 0 < self.eps < 1:  # also refuses NaN; the release's is 1e-6
            raise ValueError(f"eps must be a small positive number (the norms' epsilon), got {self.eps}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_official_json(self) -> dict:
        """The ``config.json`` content the official ``save_pretrained`` writes for this config."""
        fields = asdict(self)
        for omitted in ("patch_size", "text_dim", "qk_norm", "cross_attn_norm"):
            fields.pop(omitted)
        return {"_class_name": "WanModel", "_diffusers_version": "0.33.0", **fields}


def read_config_json(path: Path) -> dict:
    """Parse and check the official ``config.json`` of a DiT folder."""
    raw = read_json_object(
        path,
        "point to the folder that holds it (for i2v-A14B, high_noise_model/ or low_noise_model/; "
        "for ti2v-5B, the checkpoint root)",
    )
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{path} names model_type {model_type!r}; this DiT loads {', '.join(SUPPORTED_MODEL_TYPES)} "
            "checkpoints (Wan2.2-I2V-A14B experts or Wan2.2-TI2V-5B); check that the path points "
            "to one of those"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; restore it from the release")
    return raw


def read_json_object(path: Path, where: str) -> dict:
    """Parse the official ``config.json`` at ``path``; ``where`` tells the user where it lives."""
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: a DiT folder needs the config.json that ships with the official "
            f"checkpoint; {where}"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({err}); restore it from the release") from err
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object; restore it from the release")
    return raw


def config_from_checkpoint(raw: dict, shapes: dict[str, tuple[int, ...]], source: Path) -> DiTConfig:
    """Combine ``config.json`` values with sizes that only the tensors record."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(
                f"{source} has no tensor {key!r}; it is not an official Wan DiT checkpoint "
                "or it is incomplete; download the folder again"
            )
        return shapes[key]

    patch = shape("patch_embedding.weight")
    config_file = source / "config.json"
    fixes = "restore it from the release"
    sizes = {key: raw[key] for key in (*_REQUIRED_KEYS, "text_len") if key in raw}
    odd = [f"{key} {value!r}" for key, value in sizes.items()
           if isinstance(value, bool) or not isinstance(value, int)]
    if odd:
        raise CheckpointError(f"{config_file}: {', '.join(odd)} must be whole numbers; {fixes}")
    # Before a model of that many blocks is built: the weights' own count.
    blocks = numbered_blocks(shapes, "blocks.")
    if blocks != raw["num_layers"]:
        held = "blocks not numbered 0 to N-1" if blocks is None else f"{blocks} blocks"
        raise CheckpointError(f"{config_file} says num_layers {raw['num_layers']}, and the weights hold "
                              f"{held}: they are of different models; {fixes} (or the weights)")
    try:
        return DiTConfig(
            model_type=raw["model_type"],
            patch_size=tuple(patch[2:]),
            text_len=int(raw.get("text_len", 512)),
            in_dim=int(raw["in_dim"]),
            dim=int(raw["dim"]),
            ffn_dim=int(raw["ffn_dim"]),
            freq_dim=int(raw["freq_dim"]),
            text_dim=shape("text_embedding.0.weight")[1],
            out_dim=int(raw["out_dim"]),
            num_heads=int(raw["num_heads"]),
            num_layers=int(raw["num_layers"]),
            qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
            cross_attn_norm="blocks.0.norm3.weight" in shapes,
            eps=float(raw.get("eps", 1e-6)),
        )
    except (TypeError, ValueError) as err:  # a value of another JSON type, or out of range
        raise CheckpointError(f"{source / 'config.json'}: {err}; restore it from the release") from err
