"""The umT5 text encoder against the official one, its tokenizer writer, and every bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.official import official_module
from tests.tolerances import rel_l2
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models.t5_checkpoint import CHECKPOINT_FILE, T5Sizes, official_shapes, sizes_from_state_dict
from wan_runtime.models.text_cleaning import clean_prompt
from wan_runtime.models.text_encoder import TOKENIZER_DIR, load_text_encoder
from wan_runtime.models.umt5 import build_encoder
from wan_runtime.tiny_checkpoints.text_encoder import tiny_sizes, write_text_encoder

# Same operations in the same order as the official encoder: measured bit-exact (0.0) on the CPU
# in both dtypes; 1e-5 only leaves room for a BLAS that sums differently.
TE_FP32_VS_OFFICIAL = 1e-5
TE_BF16_VS_OFFICIAL = 1e-5

DIM = 4096  # the tiny DiTs' text_dim
PROMPTS = [
    "A golden cat walking on the beach at sunset, cinematic, slow motion",
    "",
    "一只猫在海边走，镜头慢动作，金色的光",
    "Tom &amp; Jerry &lt;b&gt;run&lt;/b&gt; &amp;amp; fly\t\n  over   the\u3000river",
    "<b>bold</b> cat &amp;amp; dog &amp;lt;3",
    "dog running " * 400,
]
XXL = T5Sizes(
    vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24, num_buckets=32
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_text_encoder(tmp_path_factory.mktemp("t5"), dim=DIM, seed=3)


@pytest.fixture
def damaged(tmp_path, root) -> Path:
    """A private copy of the checkpoint root for a test to damage."""
    return Path(shutil.copytree(root, tmp_path / "root"))


def official_encode(root: Path, prompts: list[str], dtype: torch.dtype) -> list[torch.Tensor]:
    """The official ``T5EncoderModel.__init__`` and ``__call__`` at the tiny sizes (its own
    constructor hard-codes umT5-XXL)."""
    t5, tokenizers = official_module("modules.t5"), official_module("modules.tokenizers")
    s = tiny_sizes(DIM)
    model = t5.T5Encoder(
        vocab=s.vocab, dim=s.dim, dim_attn=s.dim_attn, dim_ffn=s.dim_ffn, num_heads=s.num_heads,
        num_layers=s.num_layers, num_buckets=s.num_buckets, shared_pos=False, dropout=0.1,
    ).to(dtype).eval().requires_grad_(False)
    model.load_state_dict(torch.load(root / CHECKPOINT_FILE, map_location="cpu", weights_only=True))
    tokenizer = tokenizers.HuggingfaceTokenizer(
        name=str(root / TOKENIZER_DIR), seq_len=512, clean="whitespace"
    )
    ids, mask = tokenizer(prompts, return_mask=True, add_special_tokens=True)
    seq_lens = mask.gt(0).sum(dim=1).long()
    with torch.no_grad():
        context = model(ids, mask)
    return [u[:v] for u, v in zip(context, seq_lens, strict=True)]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, TE_FP32_VS_OFFICIAL),
                                                  (torch.bfloat16, TE_BF16_VS_OFFICIAL)])
def test_matches_official(root, dtype, tolerance):
    encoder = load_text_encoder(root, device="cpu", dtype=dtype)
    expected = official_encode(root, PROMPTS, dtype)
    actual = encoder.encode(PROMPTS)
    assert [u.shape[0] for u in actual] == [u.shape[0] for u in expected]
    assert actual[1].shape == (1, DIM) and actual[-1].shape == (512, DIM)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == dtype and a.device.type == "cpu"
        assert rel_l2(a, e) <= tolerance, (i, rel_l2(a, e))


def test_single_prompt_matches_batch(root):
    encoder = load_text_encoder(root, dtype=torch.float32)
    together = encoder.encode(PROMPTS[:3])
    for prompt, batched in zip(PROMPTS[:3], together, strict=True):
        assert rel_l2(encoder.encode([prompt])[0], batched) <= TE_FP32_VS_OFFICIAL
    assert encoder.encode([]) == []


@pytest.mark.parametrize("text", [
    "  tabs\tand\nnewlines\r\n  ", "&amp;amp; &quot;quoted&quot; &#20013;", "cafÃ© mojibake",
    "<i>tagged</i> &amp;amp; &amp;lt;twice&amp;gt;", "full\u3000width\u00a0spaces", "ＦＵＬＬ width",
])
def test_cleaning_matches_official(text):
    tokenizers = official_module("modules.tokenizers")
    assert clean_prompt(text) == tokenizers.whitespace_clean(tokenizers.basic_clean(text))


def test_checkpoint_is_memory_mapped_and_weights_only(root, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    encoder = load_text_encoder(root)
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
    assert encoder.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_xxl_names_and_shapes_match_official():
    """At the real sizes (on the meta device): our key list is the official one, and every
    transformers parameter receives a tensor of its shape."""
    t5 = official_module("modules.t5")
    official = t5.umt5_xxl(encoder_only=True, return_tokenizer=False, device="meta")
    shapes = {name: tuple(p.shape) for name, p in official.state_dict().items()}
    assert official_shapes(XXL) == shapes
    state = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    assert sizes_from_state_dict(state, Path(CHECKPOINT_FILE)) == XXL
    model = build_encoder(state, XXL, "meta", torch.bfloat16)
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(math.prod(shape) for shape in shapes.values())


def test_writer_layout(root, tmp_path):
    state = torch.load(root / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert {name: tuple(t.shape) for name, t in state.items()} == official_shapes(tiny_sizes(DIM))
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    tokenizer = AutoTokenizer.from_pretrained(str(root / TOKENIZER_DIR), local_files_only=True)
    assert type(tokenizer).__name__ == "T5Tokenizer"
    assert (tokenizer.pad_token_id, tokenizer.eos_token, tokenizer.eos_token_id) == (0, "</s>", 1)
    assert tokenizer.unk_token_id == 2 and tokenizer("a cat").input_ids[-1] == 1
    again = write_text_encoder(tmp_path / "again", dim=DIM, seed=3)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / TOKENIZER_DIR / name).read_bytes() == (root / TOKENIZER_DIR / name).read_bytes()
    narrow = write_text_encoder(tmp_path / "narrow", dim=64, num_layers=1)
    assert load_text_encoder(narrow).encode(["a cat"])[0].shape == (3, 64)


def expect_error(folder: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_text_encoder(folder)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_missing_checkpoint_file(damaged):
    (damaged / CHECKPOINT_FILE).unlink()
    expect_error(damaged, CHECKPOINT_FILE, "does not exist", "release root")


def test_missing_tokenizer_folder(damaged):
    shutil.rmtree(damaged / TOKENIZER_DIR)
    expect_error(damaged, "google/umt5-xxl", "does not exist", "download")


def test_broken_tokenizer_folder(damaged):
    for file in (damaged / TOKENIZER_DIR).iterdir():
        file.unlink()
    expect_error(damaged, "google/umt5-xxl", "download")


def _tokenizer_with_code(folder: Path, marker: Path) -> None:
    """A tokenizer folder whose config points transformers at a Python file beside it (auto_map,
    and no tokenizer_class): transformers would offer to run it."""
    config = folder / TOKENIZER_DIR / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings.pop("tokenizer_class", None)
    settings["auto_map"] = {"AutoTokenizer": ["evil.Tokenizer", "evil.Tokenizer"]}
    config.write_text(json.dumps(settings))
    (folder / TOKENIZER_DIR / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")


def test_a_tokenizer_that_names_code_of_its_own_is_refused_unrun(damaged, tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    _tokenizer_with_code(damaged, marker)
    expect_error(damaged, "tokenizer_config.json names code of its own to run (auto_map)",
                 "download google/umt5-xxl/ again")
    # transformers itself is told not to run it, were the check passed over.
    monkeypatch.setattr("wan_runtime.models.text_encoder.check_tokenizer_folder", lambda folder: None)
    monkeypatch.setattr("builtins.input", lambda *args: "y")
    expect_error(damaged, "the tokenizer in", "cannot be loaded")
    assert not marker.exists()


def test_tokenizer_without_its_vocabulary(damaged):
    """Without tokenizer.json the folder loads as a tokenizer of 4 special tokens; the encoder's
    embedding table shows it is not umT5's."""
    (damaged / TOKENIZER_DIR / "tokenizer.json").unlink()
    expect_error(damaged, f"{damaged / TOKENIZER_DIR} has only 4 tokens for the 512 rows",
                 "tokenizer.json or spiece.model", "download google/umt5-xxl/ again")


def test_truncated_checkpoint(damaged):
    path = damaged / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_error(damaged, CHECKPOINT_FILE, "truncated", "download")


@pytest.mark.parametrize(("content", "fragment"), [
    ({"patch_embedding.weight": torch.zeros(2, 2)}, "token_embedding.weight is missing"),
    ([torch.zeros(2)], "list"),
    ({"token_embedding.weight": torch.zeros(8, 4), "pos_embedding.embedding.weight": torch.zeros(32, 2)},
     "shared position bias"),
])
def test_state_dict_of_wrong_kind(damaged, content, fragment):
    torch.save(content, damaged / CHECKPOINT_FILE)
    expect_error(damaged, CHECKPOINT_FILE, fragment, "download")


def test_pickled_module_is_refused_unread(damaged):
    torch.save(torch.nn.Linear(2, 2), damaged / CHECKPOINT_FILE)
    expect_error(damaged, CHECKPOINT_FILE, "download")


def test_inconsistent_tensors(damaged):
    path = damaged / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    del state["blocks.1.ffn.fc2.weight"]
    state["blocks.0.attn.o.weight"] = state["blocks.0.attn.o.weight"][:, :32]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    expect_error(damaged, "missing tensors: blocks.1.ffn.fc2.weight", "unexpected tensors: extra.weight",
                 "blocks.0.attn.o.weight has shape")


@pytest.mark.parametrize(("stray", "told"), [
    ("blocks.999999.norm1.weight", "its blocks are not numbered 0 to N-1"),
    ("blocks.100000000.norm1.weight", "unexpected tensors: blocks.100000000.norm1.weight"),
    ("blocks.3.norm1.weight", "its blocks are not numbered 0 to N-1"),
    ("blocks." + "9" * 5000 + ".x", "unexpected tensors: blocks.999"),
])
def test_a_stray_block_number_is_refused_before_a_model_of_that_many_blocks(damaged, stray, told):
    path = damaged / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    state[stray] = torch.zeros(1)
    torch.save(state, path)
    expect_error(damaged, told)


def test_tokenizer_larger_than_embedding(damaged):
    path = damaged / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    state["token_embedding.weight"] = state["token_embedding.weight"][:100]
    torch.save(state, path)
    expect_error(damaged, "tokenizer", "embeds only 100")


def test_bad_arguments(root):
    with pytest.raises(InputError, match="bfloat16 or torch.float32"):
        load_text_encoder(root, dtype=torch.float16)
    with pytest.raises(InputError, match="list of prompt strings"):
        load_text_encoder(root).encode("a cat")
