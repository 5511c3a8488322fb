"""Loading official DiT folders: dtype layout, memory, and one clear error for each bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.tolerances import DIT_BF16_VS_FP32, rel_l2
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models import WanModel
from wan_runtime.models.safetensors_checkpoint import INDEX_FILE, SINGLE_FILE, load_parameters
from wan_runtime.tiny_checkpoints import TINY_I2V, write_dit


@pytest.fixture
def folder(tmp_path, ti2v_dit_dir) -> Path:
    """A private copy of the ti2v folder for a test to damage."""
    return Path(shutil.copytree(ti2v_dit_dir, tmp_path / "dit"))


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_weights(folder: Path, edit) -> None:
    path = folder / SINGLE_FILE
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def expect_error(folder: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as info:
        WanModel.from_pretrained(folder)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_compute_dtype_of_a_float32_model_keeps_its_islands_exact(ti2v_dit_dir):
    """Each weight is cast once: the float32 islands are not rounded through bfloat16 on the way."""
    model = WanModel.from_pretrained(ti2v_dit_dir)
    before = {name: p.clone() for name, p in model.named_parameters()}
    model.set_compute_dtype(torch.bfloat16)
    kept = {id(p) for p in model.float32_parameters()}
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name] if id(p) in kept else before[name].bfloat16()), name


def test_bf16_keeps_official_float32_islands(ti2v_dit_dir):
    model = WanModel.from_pretrained(ti2v_dit_dir, dtype=torch.bfloat16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["blocks.0.self_attn.q.weight"] == torch.bfloat16
    assert dtypes["blocks.0.ffn.2.weight"] == torch.bfloat16
    assert dtypes["patch_embedding.weight"] == torch.bfloat16
    assert dtypes["text_embedding.0.weight"] == torch.bfloat16
    for kept in ("blocks.0.modulation", "blocks.0.self_attn.norm_q.weight", "blocks.0.norm3.bias",
                 "time_embedding.0.weight", "time_projection.1.weight", "head.head.weight",
                 "head.modulation"):
        assert dtypes[kept] == torch.float32, kept
    assert not any(p.requires_grad for p in model.parameters())


def test_convert_model_dtype_casts_every_weight(ti2v_dit_dir):
    model = WanModel.from_pretrained(ti2v_dit_dir, dtype=torch.bfloat16, convert_model_dtype=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("convert_model_dtype", [False, True])
def test_bf16_forward_close_to_fp32(ti2v_dit_dir, convert_model_dtype):
    fp32 = WanModel.from_pretrained(ti2v_dit_dir)
    bf16 = WanModel.from_pretrained(
        ti2v_dit_dir, dtype=torch.bfloat16, convert_model_dtype=convert_model_dtype
    )
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 48, 2, 8, 8, generator=g), torch.randn(1, 9, 4096, generator=g)
    t = torch.tensor([[500.0] * 16 + [0.0] * 16])
    with torch.no_grad():
        out = bf16(x, t, context)
        assert out.dtype == torch.float32
        assert rel_l2(out, fp32(x, t, context)) <= DIT_BF16_VS_FP32


def test_sharded_and_single_file_load_the_same(tmp_path):
    single = WanModel.from_pretrained(write_dit(tmp_path / "one", TINY_I2V, seed=7))
    sharded = WanModel.from_pretrained(write_dit(tmp_path / "three", TINY_I2V, seed=7, shards=3))
    assert (tmp_path / "three" / INDEX_FILE).is_file()
    for (name, a), (_, b) in zip(single.state_dict().items(), sharded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_missing_config(folder):
    (folder / "config.json").unlink()
    expect_error(folder, "config.json is missing", str(folder))


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000 + "]" * 100_000, '{"dim": ' + "9" * 5000 + "}"])
def test_unreadable_config(folder, text):
    (folder / "config.json").write_text(text)
    expect_error(folder, "not readable JSON")


@pytest.mark.parametrize("model_type", ["t2v", "s2v", "flux", None])
def test_unknown_model_type(folder, model_type):
    edit_config(folder, model_type=model_type)
    expect_error(folder, f"model_type {model_type!r}", "i2v, ti2v")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("eps", -1, "eps must be a small positive number"), ("eps", 0, "eps must be"),
    ("text_len", 0, "text_len must be a token count from 1 to 65,536 (the release's is 512), got 0"),
    ("text_len", 10**10, "text_len must be a token count from 1 to 65,536"),
    ("eps", None, "float() argument must be"), ("dim", "wide", "dim 'wide' must be whole numbers"),
    ("num_layers", 2.7, "num_layers 2.7 must be whole numbers"), ("ffn_dim", "256", "ffn_dim '256' must be"),
    ("num_layers", True, "num_layers True must be"),
])
def test_config_values_a_forward_would_fail_on(folder, field, value, message):
    edit_config(folder, **{field: value})
    expect_error(folder, f"{folder / 'config.json'}: {message}", "restore it from the release")


@pytest.mark.parametrize("layers", [10**9, 1])
def test_a_layer_count_the_weights_do_not_hold_is_refused_before_a_model_of_it(folder, layers):
    held = json.loads((folder / "config.json").read_text())["num_layers"]
    edit_config(folder, num_layers=layers)
    expect_error(folder, f"config.json says num_layers {layers}, and the weights hold {held} blocks: they "
                         "are of different models; restore it from the release (or the weights)")


@pytest.mark.parametrize("where", ["../out.safetensors", "/abs/shard.safetensors", "..", "sub/a.safetensors"])
def test_an_index_naming_files_outside_its_folder_is_refused(tmp_path, where):
    folder = write_dit(tmp_path / "dit", TINY_I2V, shards=2)
    index = json.loads((folder / INDEX_FILE).read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = where
    (folder / INDEX_FILE).write_text(json.dumps(index))
    expect_error(folder, "names shards that are no file names of its folder", repr(where))


def test_no_weights(folder):
    (folder / SINGLE_FILE).unlink()
    expect_error(folder, f"holds neither {SINGLE_FILE} nor {INDEX_FILE}")


def test_missing_tensor(folder):
    edit_weights(folder, lambda t: t.pop("blocks.1.ffn.0.bias"))
    expect_error(folder, "missing tensors: blocks.1.ffn.0.bias")


def test_unexpected_tensor(folder):
    edit_weights(folder, lambda t: t.update({"blocks.0.extra.weight": torch.zeros(2)}))
    expect_error(folder, "unexpected tensors: blocks.0.extra.weight")


def test_config_disagrees_with_tensors(folder):
    edit_config(folder, ffn_dim=1024)
    expect_error(folder, "blocks.0.ffn.0.weight", "has shape [512, 256]", "implies [1024, 256]")


def test_truncated_file(folder):
    path = folder / SINGLE_FILE
    os.truncate(path, path.stat().st_size - 64)
    expect_error(folder, str(path), "truncated", "download that file again")


def test_index_names_missing_shard(tmp_path):
    folder = write_dit(tmp_path / "dit", TINY_I2V, shards=2)
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    expect_error(folder, "lacks shard(s) diffusion_pytorch_model-00002-of-00002.safetensors")


@pytest.mark.parametrize(
    ("x_shape", "t_shape", "context_shape", "message"),
    [
        ((1, 16, 2, 8, 8), (1,), (1, 9, 4096), "carry 16 channels, the model takes 48"),
        ((1, 48, 2, 7, 8), (1,), (1, 9, 4096), "not a multiple of the patch size"),
        ((1, 48, 2, 8, 8), (1, 5), (1, 9, 4096), "t must be [1] or [1, 32]"),
        ((1, 48, 2, 8, 8), (1,), (1, 9, 100), "context must be [1, L, 4096]"),
        ((1, 48, 2, 8, 8), (1,), (1, 513, 4096), "at most text_len=512"),
        ((48, 2, 8, 8), (1,), (1, 9, 4096), "x must be [B, C, F, H, W]"),
    ],
)
def test_bad_forward_inputs(ti2v_dit_dir, x_shape, t_shape, context_shape, message):
    model = WanModel.from_pretrained(ti2v_dit_dir)
    with pytest.raises(InputError) as info:
        model(torch.randn(x_shape), torch.full(t_shape, 500.0), torch.randn(context_shape))
    assert message in str(info.value)


PEAK_LOAD_SCRIPT = textwrap.dedent("""
    import sys, threading, time, torch
    from wan_runtime.models import WanModel

    def anon_kib():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

    peak, done = [anon_kib()], [False]
    def sample():
        while not done[0]:
            peak.append(anon_kib())
            time.sleep(0.001)
    base = peak[0]
    thread = threading.Thread(target=sample)
    thread.start()
    model = WanModel.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
    done[0] = True
    thread.join()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    print((max(peak) - base) * 1024, size)
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux process status")
def test_bf16_load_needs_one_model_not_two(tmp_path):
    """A float32 checkpoint loads into bfloat16 with the bf16 model's memory plus one tensor,
    not the float32 state dict and the model side by side."""
    config = TINY_I2V.__class__(model_type="i2v", in_dim=36, out_dim=16, dim=1024, ffn_dim=4096,
                                num_heads=8, num_layers=6)
    folder = write_dit(tmp_path / "dit", config, shards=2)
    file_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    result = subprocess.run([sys.executable, "-c", PEAK_LOAD_SCRIPT, str(folder)], capture_output=True,
                            text=True, check=True, cwd=Path(__file__).parents[2])
    peak, model_bytes = map(int, result.stdout.split())
    largest_fp32_tensor = config.dim * 6 * config.dim * 4
    assert model_bytes < 0.6 * file_bytes
    assert peak <= model_bytes + 2 * largest_fp32_tensor + 32 * 2**20, (peak, model_bytes, file_bytes)


def test_each_block_is_handed_on_as_soon_as_its_weights_have_loaded(ti2v_dit_dir):
    """``when_loaded`` (FSDP shards a block then): when a block's hook runs, every block handed on
    so far and this one have loaded, and no other has begun (in one file; where a block is split
    between two files, ``test_sharding`` loads one)."""
    model, entries = WanModel._meta_model(ti2v_dit_dir)
    seen = []

    def begun() -> list[int]:
        return [i for i, block in enumerate(model.blocks) if any(not p.is_meta for p in block.parameters())]

    def hand_on(index: int) -> None:
        assert all(not p.is_meta for p in model.blocks[index].parameters())
        seen.append((index, begun()))

    hooks = {f"blocks.{i}.": partial(hand_on, i) for i in range(len(model.blocks))}
    load_parameters(model, entries, "cpu", when_loaded=hooks)
    assert len(model.blocks) > 1 and sorted(i for i, _ in seen) == list(range(len(model.blocks)))
    assert all(loaded == sorted(i for i, _ in seen[:k + 1]) for k, (_, loaded) in enumerate(seen))


def test_a_hooks_own_error_is_not_blamed_on_the_checkpoint(ti2v_dit_dir):
    model, entries = WanModel._meta_model(ti2v_dit_dir)

    def failing() -> None:
        raise OSError("a collective's socket closed")

    with pytest.raises(OSError) as caught:
        load_parameters(model, entries, "cpu", when_loaded={"blocks.0.": failing})
    assert type(caught.value) is OSError
