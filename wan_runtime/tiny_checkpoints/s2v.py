"""A tiny random ``Wan2.2-S2V-14B/`` folder: umT5 + tokenizer, Wan 2.1 VAE, wav2vec2 folder and the
S2V DiT at the root, in the release's layout.

The wav2vec2 folder is a transformers ``Wav2Vec2ForCTC`` with its processor (feature extractor and
CTC tokenizer), as the release's ``wav2vec2-large-xlsr-53-english/`` is, built offline. It keeps
the release's 24 transformer layers (25 hidden states), which the official audio encoder's layer
weights assume, at a tiny width.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from wan_runtime.models.audio_encoder import SAMPLE_RATE, WAV2VEC2_DIR
from wan_runtime.models.s2v_config import S2VConfig
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.tiny_checkpoints.dit import write_dit
from wan_runtime.tiny_checkpoints.text_encoder import write_text_encoder
from wan_runtime.tiny_checkpoints.vae import write_vae21

TINY_WAV2VEC2_WIDTH = 32
TINY_S2V = S2VConfig(
    dim=128, ffn_dim=256, num_heads=2, num_layers=3, audio_dim=TINY_WAV2VEC2_WIDTH,
    audio_inject_layers=(0, 2),
)
_CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'"]


def write_wav2vec2(folder: str | Path, width: int = TINY_WAV2VEC2_WIDTH, seed: int = 0) -> Path:
    """Write a random ``Wav2Vec2ForCTC`` of hidden size ``width`` (1024 in the release) with its
    processor files into ``folder``, atomically (a temporary sibling folder, then a rename)."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = Wav2Vec2Config(
        vocab_size=len(_CTC_VOCAB), hidden_size=width, num_hidden_layers=24, num_attention_heads=2,
        intermediate_size=2 * width, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
        conv_bias=True,
    )
    torch.manual_seed(seed)  # transformers initialises from the global generator
    model = Wav2Vec2ForCTC(config).eval()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as staging:
        staging = Path(staging) / "wav2vec2"
        staging.mkdir()
        (staging / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(_CTC_VOCAB)}))
        tokenizer = Wav2Vec2CTCTokenizer(str(staging / "vocab.json"))
        extractor = Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
            return_attention_mask=True,
        )
        Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(staging)
        extractor.save_pretrained(staging)  # preprocessor_config.json, as in the release folder
        model.save_pretrained(staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    return folder


def write_s2v_checkpoint(root: str | Path, config: S2VConfig = TINY_S2V, seed: int = 0) -> Path:
    """Write ``Wan2.2-S2V-14B/``-like contents into ``root``: the umT5 file and tokenizer folder,
    ``Wan2.1_VAE.pth``, ``wav2vec2-large-xlsr-53-english/`` and the S2V DiT at the root (sharded
    in two, as the release is). Returns ``root``."""
    root = Path(root)
    write_text_encoder(root, dim=config.text_dim, seed=seed)
    write_vae21(root / "Wan2.1_VAE.pth", seed=seed)
    write_wav2vec2(root / WAV2VEC2_DIR, width=config.audio_dim, seed=seed)
    write_dit(root, config, seed=seed + 1, shards=2, model_class=WanModelS2V)
    return root
