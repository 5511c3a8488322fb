"""Our Wan VAEs against the official ``Wan2_1_VAE`` / ``Wan2_2_VAE`` in float32 on the CPU."""

from __future__ import annotations

import pytest
import torch

from tests.models.vae_helpers import official_inner_model, official_wrapper, tiny_files
from tests.tolerances import rel_l2
from wan_runtime.models.vae_loading import load_vae

# Same float32 math, different summation order (conv padding inside the kernel, no einops copies).
VAE_FP32_VS_OFFICIAL = 1e-4

# The official wrappers enter torch.cuda.amp.autocast, deprecated (and disabled without CUDA).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")

SIZES = {"2.1": [(16, 24), (32, 48)], "2.2": [(32, 32), (32, 48)]}
CASES = [(version, frames, size) for version in SIZES for frames in (1, 5, 9) for size in SIZES[version]]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_files(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def pairs(files):
    """(ours, official wrapper) per version, both loading our writer's file."""
    return {version: (load_vae(path), official_wrapper(version, path)) for version, path in files.items()}


@pytest.mark.parametrize(("version", "frames", "size"), CASES)
def test_encode_decode_match_official(pairs, version, frames, size):
    ours, official = pairs[version]
    video = torch.rand(3, frames, *size, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    expected_z = official.encode([video])[0]
    z = ours.encode([video])[0]
    assert (
        z.shape
        == expected_z.shape
        == (ours.z_dim, 1 + (frames - 1) // 4, size[0] // ours.spatial_stride, size[1] // ours.spatial_stride)
    )
    assert rel_l2(z, expected_z) <= VAE_FP32_VS_OFFICIAL

    expected_x = official.decode([expected_z])[0]
    x = ours.decode([expected_z])[0]
    assert x.shape == expected_x.shape == video.shape
    assert x.dtype == torch.float32 and float(x.abs().max()) <= 1
    assert rel_l2(x, expected_x) <= VAE_FP32_VS_OFFICIAL


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_loads_state_dict_saved_from_official_class(tmp_path, version):
    official = official_inner_model(version, seed=3)
    path = tmp_path / "official.pth"
    torch.save(official.state_dict(), path)
    ours = load_vae(path)
    assert ours.version == version
    video = torch.rand(3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scale = [ours.mean.flatten(), ours.inv_std.flatten()]
    with torch.no_grad():
        expected_z = official.encode(video[None], scale)[0]
        expected_x = official.decode(expected_z[None], scale).clamp(-1, 1)[0]
    assert rel_l2(ours.encode([video])[0], expected_z) <= VAE_FP32_VS_OFFICIAL
    assert rel_l2(ours.decode([expected_z])[0], expected_x) <= VAE_FP32_VS_OFFICIAL
