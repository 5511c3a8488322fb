"""A tiny random umT5 encoder file and tokenizer folder in the layout of a Wan2.2 release root.

The tokenizer is built offline from a fixed word list: a ``tokenizers`` Unigram model with the
T5 conventions (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, ``▁`` word starts, ``</s>`` appended),
saved so that ``AutoTokenizer`` loads it as a ``T5Tokenizer``. Words outside the list fall back
to single characters, so long or non-ASCII prompts still give many distinct ids.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from wan_runtime.models.t5_checkpoint import CHECKPOINT_FILE, T5Sizes, official_shapes
from wan_runtime.models.text_encoder import TOKENIZER_DIR
from wan_runtime.tiny_checkpoints.files import atomic_write

_SPECIALS = ["<pad>", "</s>", "<unk>"]
_WORDS = (
    "a an the of in on at to and with is are was by for from over under into through while as "
    "cat dog bird fish horse person man woman child car boat city street forest river ocean sky "
    "mountain beach road house light shadow rain snow sun moon night day morning evening camera "
    "shot slow motion close up wide view walking running flying swimming jumping dancing red blue "
    "green white black golden bright dark soft warm cold cinematic realistic video scene style "
    "quality detailed blurry low worst static frame background foreground"
).split()
# A few common CJK characters, so Chinese prompts are not all <unk>.
_CJK = (
    "一个的是在人猫狗鸟鱼马车船城市街道森林河海天空山路房子光影雨雪太阳月亮"
    "夜白天镜头慢动作近景远景走跑飞游跳舞红蓝绿黑金色明暗画面风格质量低最差静止背景"
)


def tiny_tokenizer() -> Tokenizer:
    """The deterministic tiny Unigram tokenizer; ids follow the list order."""
    pieces = [(token, 0.0) for token in _SPECIALS] + [("▁", -2.0)]
    pieces += [(f"▁{word}", -3.0 - 0.01 * i) for i, word in enumerate(_WORDS)]
    characters = string.ascii_letters + string.digits + string.punctuation + _CJK
    pieces += [(ch, -8.0) for ch in characters] + [(f"▁{ch}", -8.5) for ch in characters]
    # A piece listed twice (the word "a" and the letter "a") keeps its first id and score.
    unique: dict[str, float] = {}
    for piece, score in pieces:
        unique.setdefault(piece, score)
    tokenizer = Tokenizer(Unigram(list(unique.items()), unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    return tokenizer


def write_tokenizer(folder: str | Path) -> Path:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    specials = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512, **specials}
    atomic_write(folder / "tokenizer.json", lambda p: tokenizer.save(str(p)))
    atomic_write(folder / "tokenizer_config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
    atomic_write(folder / "special_tokens_map.json", lambda p: p.write_text(json.dumps(specials, indent=2)))
    return folder


def tiny_sizes(dim: int = 4096, num_layers: int = 2) -> T5Sizes:
    """Small sizes with an output width ``dim`` (the DiT's ``text_dim``, 4096 in the release)."""
    vocab = 128 * math.ceil(tiny_tokenizer().get_vocab_size() / 128)
    return T5Sizes(vocab=vocab, dim=dim, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=num_layers,
                   num_buckets=32)


def random_state_dict(sizes: T5Sizes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Float32 tensors under the official key names, seeded, of realistic scale."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_shapes(sizes).items():
        noise = torch.randn(shape, generator=generator)
        if len(shape) == 1:
            state[name] = 1 + 0.1 * noise
        elif name == "token_embedding.weight" or "pos_embedding" in name:
            state[name] = noise
        else:
            state[name] = noise / math.sqrt(shape[1])
    return state


def write_text_encoder(
    root: str | Path, dim: int = 4096, num_layers: int = 2, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Write ``models_t5_umt5-xxl-enc-bf16.pth`` (official key names, bfloat16 as released) and the
    tokenizer folder ``google/umt5-xxl/`` into the checkpoint root ``root``; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    state = random_state_dict(tiny_sizes(dim, num_layers), seed)
    state = {name: value.to(dtype) for name, value in state.items()}
    atomic_write(root / CHECKPOINT_FILE, lambda p: torch.save(state, p))
    write_tokenizer(root / TOKENIZER_DIR)
    return root
