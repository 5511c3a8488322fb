"""Loading Wan VAE files: what is read from the shapes, dtypes, and every bad file or input."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from tests.models.vae_helpers import DEC_DIM_22, DIM_21, DIM_22, tiny_files
from tests.tolerances import rel_l2
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models import torch_archive
from wan_runtime.models.vae_loading import load_vae

# bfloat16 weights and activations against float32: rounding through ~40 conv layers.
VAE_BF16_VS_FP32 = 5e-2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_files(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def vae21(files):
    return load_vae(files["2.1"])


def test_sizes_come_from_the_shapes(files):
    v21, v22 = load_vae(files["2.1"]), load_vae(files["2.2"])
    assert (v21.version, v21.z_dim, v21.spatial_stride, v21.temporal_stride) == ("2.1", 16, 8, 4)
    assert (v22.version, v22.z_dim, v22.spatial_stride, v22.temporal_stride) == ("2.2", 48, 16, 4)
    assert v21.model.encoder.conv1.out_channels == DIM_21
    assert v22.model.encoder.conv1.out_channels == DIM_22
    assert v22.model.decoder.head[2].in_channels == DEC_DIM_22


def test_written_file_has_the_official_layout(files):
    state = torch.load(files["2.1"], map_location="cpu", weights_only=True)
    assert "encoder.downsamples.5.time_conv.weight" in state
    assert "decoder.upsamples.11.resample.1.weight" in state
    assert state["decoder.middle.1.to_qkv.weight"].shape == (4 * DIM_21 * 3, 4 * DIM_21, 1, 1)
    # Unlike the official init, the attention output and the RMSNorm gains are not trivial.
    assert float(state["decoder.middle.1.proj.weight"].abs().sum()) > 0
    assert not torch.equal(state["decoder.head.0.gamma"], torch.ones_like(state["decoder.head.0.gamma"]))


def test_bfloat16_is_close_to_float32(files, vae21):
    bf16 = load_vae(files["2.1"], dtype=torch.bfloat16)
    assert bf16.model.conv1.weight.dtype == torch.bfloat16
    video = torch.rand(3, 5, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z32, z16 = vae21.encode([video])[0], bf16.encode([video])[0]
    assert z16.dtype == torch.float32 and rel_l2(z16, z32) <= VAE_BF16_VS_FP32
    assert rel_l2(bf16.decode([z32])[0], vae21.decode([z32])[0]) <= VAE_BF16_VS_FP32


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"Wan2\.1_VAE\.pth.*does not exist.*download"):
        load_vae(tmp_path / "Wan2.1_VAE.pth")


def test_truncated_file(files, tmp_path):
    data = files["2.2"].read_bytes()
    path = tmp_path / "Wan2.2_VAE.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_vae(path)
    # The file, what is wrong with it and the fix; not torch's paragraph on zip internals.
    assert str(info.value) == (
        f"VAE checkpoint {path} is truncated or corrupt (its zip directory, at the end of the file, is "
        "missing or damaged); download Wan2.2_VAE.pth again from the official Wan2.2 release"
    )


@pytest.mark.parametrize("where", ["data", "header"])
def test_file_damaged_inside(files, tmp_path, where):
    """Bytes overwritten inside a record, or its local header, keep the zip directory whole and the
    file loadable by torch (which checks no CRC; memory-mapped, not the local headers either), as
    values no model was trained with: the records' checks find them."""
    data = bytearray(files["2.1"].read_bytes())
    with zipfile.ZipFile(files["2.1"]) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    inside = largest.header_offset + (128 if where == "data" else 0)
    data[inside:inside + 64] = bytes(64)
    path = tmp_path / "Wan2.1_VAE.pth"
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True, mmap=True)
    message = (rf"VAE checkpoint {path} is corrupt: 1 of its records do not match their checksums "
               r"\(the first: .*/data/\d+\), .*; download Wan2\.1")
    with pytest.raises(CheckpointError, match=message):
        load_vae(path)


def test_an_archive_is_checksummed_once_while_unchanged(files, tmp_path, monkeypatch):
    """A pipeline's checks and its loading both ask; the file changed is read again."""
    path = tmp_path / "Wan2.1_VAE.pth"
    path.write_bytes(files["2.1"].read_bytes())
    crcs = []
    crc32 = torch_archive.zlib.crc32
    monkeypatch.setattr(torch_archive.zlib, "crc32", lambda *args: crcs.append(1) or crc32(*args))
    assert torch_archive.damaged_records(path) == [] and crcs
    read = len(crcs)
    assert torch_archive.damaged_records(path) == [] and len(crcs) == read
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    data[largest.header_offset + 128:largest.header_offset + 192] = bytes(64)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(0, 1))  # changed, whatever the clock's resolution
    assert len(torch_archive.damaged_records(path)) == 1 and len(crcs) > read


def _with_aliases(source: Path, target: Path, count: int) -> int:
    """``source``'s archive with ``count`` more directory entries that all point at its largest
    record (crafted: each would have that record's bytes summed once more); that record's size."""
    data = source.read_bytes()
    with zipfile.ZipFile(source) as archive:
        infos, directory = archive.infolist(), archive.start_dir
    largest = max(infos, key=lambda info: info.compress_size)

    def entry(name: str, info: zipfile.ZipInfo) -> bytes:
        encoded = name.encode()
        return struct.pack("<4s6H3I5HII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, info.CRC, info.compress_size,
                           info.file_size, len(encoded), 0, 0, 0, 0, 0, info.header_offset) + encoded

    prefix = infos[0].filename.split("/")[0]
    entries = [entry(info.filename, info) for info in infos]
    entries += [entry(f"{prefix}/alias{n}", largest) for n in range(count)]
    listing = b"".join(entries)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(listing), directory, 0)
    target.write_bytes(data[:directory] + listing + end)
    return largest.compress_size


def test_records_that_share_their_bytes_are_damaged_and_summed_once(files, tmp_path, monkeypatch):
    path = tmp_path / "Wan2.1_VAE.pth"
    size = _with_aliases(files["2.1"], path, count=50)
    summed = []
    crc32 = torch_archive.zlib.crc32
    monkeypatch.setattr(torch_archive.zlib, "crc32", lambda chunk, *args: summed.append(len(chunk)) or
                        crc32(chunk, *args))
    damaged = torch_archive.damaged_records(path)
    assert sorted(damaged) == sorted(f"{damaged[0].split('/')[0]}/alias{n}" for n in range(50))
    assert sum(summed) < path.stat().st_size < 50 * size
    with pytest.raises(CheckpointError, match="is corrupt: 50 of its records do not match their checksums"):
        load_vae(path)


def test_zip_archive_that_torch_did_not_write(tmp_path):
    path = tmp_path / "Wan2.1_VAE.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.txt", "not tensors")
    with pytest.raises(CheckpointError, match=r"Wan2\.1_VAE\.pth is a zip archive but not a torch.save file"):
        load_vae(path)


@pytest.mark.parametrize(
    "state",
    [
        {
            "patch_embedding.weight": torch.zeros(8, 16, 1, 2, 2),
            "blocks.0.self_attn.q.weight": torch.zeros(8, 8),
        },
        {"token_embedding.weight": torch.zeros(10, 8), "blocks.0.attn.q.weight": torch.zeros(8, 8)},
    ],
    ids=["dit", "t5"],
)
def test_another_models_weights(tmp_path, state):
    path = tmp_path / "model.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"model\.pth is not a Wan VAE checkpoint.*DiT or T5"):
        load_vae(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "vae.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_vae(path)


def _edited(files, tmp_path, edit) -> str:
    state = torch.load(files["2.1"], map_location="cpu", weights_only=True)
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return path


def test_unknown_key(files, tmp_path):
    path = _edited(files, tmp_path, lambda s: s.update({"decoder.extra.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="unknown keys: decoder.extra.weight"):
        load_vae(path)


def test_missing_key(files, tmp_path):
    path = _edited(files, tmp_path, lambda s: s.pop("decoder.middle.1.proj.bias"))
    with pytest.raises(CheckpointError, match="missing keys: decoder.middle.1.proj.bias"):
        load_vae(path)


def test_wrong_shape(files, tmp_path):
    path = _edited(files, tmp_path, lambda s: s.update({"decoder.head.0.gamma": torch.ones(7, 1, 1, 1)}))
    with pytest.raises(CheckpointError, match="wrong shapes: decoder.head.0.gamma"):
        load_vae(path)


def test_unknown_channel_counts(files, tmp_path):
    path = _edited(files, tmp_path, lambda s: s.update({"conv2.weight": torch.zeros(8, 8, 1, 1, 1)}))
    with pytest.raises(CheckpointError, match="latent channels"):
        load_vae(path)


@pytest.mark.parametrize(
    ("videos", "message"),
    [
        (torch.zeros(3, 5, 16, 16), "list of tensors"),
        ([torch.zeros(5, 16, 16)], r"expected \[3, F, H, W\]"),
        ([torch.zeros(4, 5, 16, 16)], r"expected \[3, F, H, W\]"),
        ([torch.zeros(3, 6, 16, 16)], "1 \\+ 4n frames"),
        ([torch.zeros(3, 5, 12, 16)], "multiples of 8"),
    ],
)
def test_bad_videos(vae21, videos, message):
    with pytest.raises(InputError, match=message):
        vae21.encode(videos)


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        ([torch.zeros(48, 2, 2, 2)], r"expected \[16, F, H, W\]"),
        ([torch.zeros(16, 2, 2)], r"expected \[16, F, H, W\]"),
        ([torch.zeros(16, 0, 2, 2)], "F positive"),
    ],
)
def test_bad_latents(vae21, latents, message):
    with pytest.raises(InputError, match=message):
        vae21.decode(latents)
