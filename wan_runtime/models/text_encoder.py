"""The umT5-XXL prompt encoder: official checkpoint and tokenizer in, per-prompt embeddings out.

``load_text_encoder(ckpt_dir)`` reads ``models_t5_umt5-xxl-enc-bf16.pth`` and the tokenizer folder
``google/umt5-xxl/`` from a Wan2.2 release root. ``encode(prompts)`` gives what the official
``T5EncoderModel(prompts, device)`` gives: one ``[L_i, dim]`` tensor per prompt, ``L_i`` its number
of tokens (``</s>`` included, at most ``text_len``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models.t5_checkpoint import CHECKPOINT_FILE, T5Sizes, read_checkpoint

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

TOKENIZER_DIR = "google/umt5-xxl"
# The files that hold a tokenizer's vocabulary (fast, sentencepiece); a folder with neither still
# loads in transformers, as a tokenizer of its few special tokens that makes every word <unk>.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
# The files that name its special tokens, the padding one among them, which encoding needs.
TOKENIZER_SPECIALS = ("special_tokens_map.json", "tokenizer_config.json")
TEXT_LEN = 512
_DTYPES = (torch.bfloat16, torch.float32)


def check_tokenizer_folder(folder: Path) -> None:
    """``CheckpointError`` unless ``folder`` is a tokenizer folder that names no code of its own:
    an ``auto_map`` in its ``tokenizer_config.json`` points transformers at Python files beside it,
    which the official umT5 tokenizer has none of and this runtime never runs."""
    if not folder.is_dir():
        raise CheckpointError(
            f"the tokenizer folder {folder} does not exist; the Wan2.2 release root holds it as "
            f"{TOKENIZER_DIR}/ next to {CHECKPOINT_FILE}: download that folder too"
        )
    config = folder / "tokenizer_config.json"
    redownload = f"download {TOKENIZER_DIR}/ again from the official Wan2.2 release"
    try:
        settings = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{config} is not readable JSON ({type(err).__name__}); {redownload}") from err
    if not isinstance(settings, dict):
        raise CheckpointError(f"{config} must hold a JSON object; {redownload}")
    if "auto_map" in settings:
        raise CheckpointError(f"{config} names code of its own to run (auto_map), which the official umT5 "
                              f"tokenizer does not and wan_runtime never runs: {redownload}")


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The Hugging Face tokenizer saved in ``folder``, read from disk only, without running code of
    the folder's (``check_tokenizer_folder``)."""
    # transformers is imported on use: importing the models package stays light for DiT-only work.
    from transformers import AutoTokenizer

    check_tokenizer_folder(folder)
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(
            f"the tokenizer in {folder} cannot be loaded ({err}); download {TOKENIZER_DIR}/ again "
            "from the official Wan2.2 release"
        ) from err


class TextEncoder:
    """A umT5 encoder with its tokenizer; ``encode`` runs on the encoder's device and dtype."""

    def __init__(
        self,
        model: UMT5EncoderModel,
        sizes: T5Sizes,
        tokenizer: PreTrainedTokenizerBase,
        text_len: int = TEXT_LEN,
    ) -> None:
        self.model = model
        self.sizes = sizes
        self.tokenizer = tokenizer
        self.text_len = text_len

    @property
    def device(self) -> torch.device:
        """Where the weights are and where ``encode`` returns its tensors."""
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype, also that of the embeddings ``encode`` returns."""
        return self.model.shared.weight.dtype

    def to(self, device: torch.device | str) -> TextEncoder:
        """Move the weights (e.g. back to the CPU to free accelerator memory); returns ``self``."""
        self.model.to(device)
        return self

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned, truncated and padded ``[B, text_len]`` token ids and attention mask."""
        from wan_runtime.models.text_cleaning import clean_prompt

        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=self.text_len,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return batch.input_ids, batch.attention_mask

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """One ``[L_i, dim]`` embedding per prompt, on ``self.device`` in ``self.dtype``."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InputError("encode takes a list of prompt strings, e.g. encode(['a cat surfing'])")
        if not prompts:
            return []
        ids, mask = self.tokenize(prompts)
        lengths = mask.sum(dim=1).tolist()
        # Padding is on the right and masked out of every attention, so dropping the pad columns
        # that no prompt needs leaves the real tokens' outputs unchanged and saves their compute.
        width = max(lengths)
        ids, mask = ids[:, :width].to(self.device), mask[:, :width].to(self.device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return [state[:n] for state, n in zip(states, lengths, strict=True)]


def load_text_encoder(
    ckpt_dir: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    text_len: int = TEXT_LEN,
) -> TextEncoder:
    """Load the umT5 encoder and tokenizer of a Wan2.2 release root ``ckpt_dir``.

    ``device="cpu"`` is the official ``t5_cpu`` placement. ``dtype`` is ``torch.bfloat16`` (the
    official choice and the file's own dtype: on the CPU the weights then stay memory-mapped) or
    ``torch.float32``.
    """
    if dtype not in _DTYPES:
        raise InputError(f"the text encoder runs in torch.bfloat16 or torch.float32, not {dtype}")
    from wan_runtime.models.umt5 import build_encoder

    ckpt_dir = Path(ckpt_dir)
    weights = ckpt_dir / CHECKPOINT_FILE
    state, sizes = read_checkpoint(weights)
    tokenizer = load_tokenizer(ckpt_dir / TOKENIZER_DIR)
    if len(tokenizer) > sizes.vocab:
        raise CheckpointError(
            f"the tokenizer in {ckpt_dir / TOKENIZER_DIR} has {len(tokenizer)} tokens but {weights} embeds "
            f"only {sizes.vocab}; use the tokenizer folder of the same Wan2.2 release"
        )
    # The embedding table may pad the vocabulary to a round size, never to twice its size: a
    # tokenizer that small is not the one the encoder learnt (its vocabulary file is missing).
    if 2 * len(tokenizer) < sizes.vocab:
        raise CheckpointError(
            f"the tokenizer in {ckpt_dir / TOKENIZER_DIR} has only {len(tokenizer)} tokens for the "
            f"{sizes.vocab} rows of {weights}'s embedding table, so most words would be <unk>: its "
            f"vocabulary ({' or '.join(TOKENIZER_FILES)}) is missing or not umT5's; download "
            f"{TOKENIZER_DIR}/ again from the official Wan2.2 release"
        )
    return TextEncoder(build_encoder(state, sizes, device, dtype), sizes, tokenizer, text_len)
