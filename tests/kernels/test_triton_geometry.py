"""The Triton row kernels under every geometry a ``RowConfig`` can give them (several tokens per
program, chunked rows, chunks smaller than a head, rows split in two tiles, tiles that straddle
samples or run past the last token), and the elementwise kernels under ``BlockConfig``s (blocks
wider or narrower than a row, 1 to 16 elements a thread), compute the reference's function; the
benchmark's ``--sweep`` times the same ones."""

from __future__ import annotations

import pytest
import torch

import wan_kernels
from tests.kernels.cases import modulation, randn
from tests.kernels.tolerances import REDUCTION_RTOL, assert_matches
from wan_kernels import reference

pytestmark = pytest.mark.skipif("triton" not in wan_kernels.available_backends(),
                                reason="Triton unavailable here")
if "triton" in wan_kernels.available_backends():
    from wan_kernels.triton.launch import BlockConfig, RowConfig, configured

EPS = 1e-6
# Two samples of five tokens: 10 rows, so 4- and 8-token tiles straddle the samples and the last
# tile runs past the last row. Split rows: 77 channels as 64 + 16 lanes, 80 (heads of 16) as 64 +
# 16, 96 (heads of 48) as 64 + 32, the tile boundary inside a head, 320 as 256 + 64. Chunk walks
# also pipelined (the same arithmetic; interpreted, Triton runs the loop as written).
CONFIGS = [
    dict(tokens=2), dict(tokens=8, warps=2), dict(chunk=32), dict(tokens=4, chunk=64, warps=2),
    dict(tokens=2, chunk=128, warps=8), dict(split=True), dict(split=True, tokens=4, warps=2),
    dict(chunk=32, stages=3), dict(tokens=2, chunk=64, warps=2, stages=2),
]
# The relative errors' kernels also with fewer programs than tiles, each taking tiles in turn (a
# CPU counts as one SM): 2 programs over 5 or 3 tiles, one over all, 3 over chunked rows; and in one
# launch, its last program reducing the partial sums, alone or with programs that take tiles in turn.
REDUCTION_CONFIGS = [
    *CONFIGS, dict(tokens=2, programs_per_sm=2), dict(split=True, tokens=2, warps=2, programs_per_sm=1),
    dict(chunk=32, programs_per_sm=3), dict(one_launch=True), dict(chunk=32, tokens=4, one_launch=True),
    dict(split=True, programs_per_sm=2, one_launch=True),
]


def _config_id(config: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in config.items())


CONFIG = pytest.mark.parametrize("config", CONFIGS, ids=_config_id)


@pytest.fixture(autouse=True)
def _triton():
    wan_kernels.set_backend("triton")
    yield
    wan_kernels.set_backend("auto")


@CONFIG
@pytest.mark.parametrize("width, kind", [(77, "per_sample"), (320, "per_token")])
def test_layernorm_modulate(config, width, kind):
    shape = (2, 5, width)
    x = randn(shape, torch.bfloat16, seed=1)
    shift, scale = modulation(shape, kind, seed=2), modulation(shape, kind, seed=3, scale=0.5)
    with configured("layernorm_modulate", RowConfig(**config)):
        actual = wan_kernels.layernorm_modulate(x, shift, scale, EPS)
    assert_matches(actual, reference.layernorm_modulate(x, shift, scale, EPS), torch.bfloat16)


@CONFIG
@pytest.mark.parametrize("width, kind", [(77, "per_token"), (320, "per_sample")])
def test_gated_residual_layernorm_modulate(config, width, kind):
    shape = (2, 5, width)
    x, y = randn(shape, seed=1), randn(shape, torch.bfloat16, seed=2)
    gate, shift = modulation(shape, kind, seed=3), modulation(shape, kind, seed=4)
    scale = modulation(shape, kind, seed=5, scale=0.5)
    with configured("gated_residual_layernorm_modulate", RowConfig(**config)):
        residual, hidden = wan_kernels.gated_residual_layernorm_modulate(x, y, gate, shift, scale, EPS)
    expected = reference.gated_residual_layernorm_modulate(x, y, gate, shift, scale, EPS)
    assert_matches(residual, expected[0], torch.float32)
    assert_matches(hidden, expected[1], torch.float32)


@CONFIG
@pytest.mark.parametrize("width, heads", [(80, 5), (96, 2), (320, 5)])
def test_qk_rmsnorm_rope(config, width, heads):
    """Heads of 16 (chunks of 32 and more span several), of 48 (split at 64 lanes, inside the
    second head) and of 64 (chunks of 32 split them)."""
    shape = (2, 5, width)
    q, k = randn(shape, torch.bfloat16, seed=1), randn(shape, torch.bfloat16, seed=2)
    weight_q, weight_k = 1 + randn((width,), seed=3, scale=0.1), 1 + randn((width,), seed=4, scale=0.1)
    angles = randn((5, 1, width // heads // 2), seed=5, scale=3.0)
    args = (q, k, weight_q, weight_k, angles.cos(), angles.sin(), heads, EPS)
    with configured("qk_rmsnorm_rope", RowConfig(**config)):
        actual = wan_kernels.qk_rmsnorm_rope(*args)
    for a, e in zip(actual, reference.qk_rmsnorm_rope(*args), strict=True):
        assert_matches(a, e, torch.bfloat16)


@pytest.mark.parametrize("config", REDUCTION_CONFIGS, ids=_config_id)
@pytest.mark.parametrize("name", ["rel_l1", "rel_l2"])
@pytest.mark.parametrize("stride", [1, 2])
def test_relative_error(config, name, stride):
    b = randn((2, 5, 77), torch.bfloat16, seed=1)
    a = (b.float() + randn(b.shape, seed=2, scale=0.1)).to(torch.bfloat16)
    with configured(name, RowConfig(**config)):
        actual = getattr(wan_kernels, name)(a, b, stride)
    torch.testing.assert_close(actual, getattr(reference, name)(a, b, stride), rtol=REDUCTION_RTOL, atol=0)


BLOCKS = [dict(block=64, warps=1), dict(block=128, warps=4), dict(block=512, warps=4),
          dict(block=1024, warps=8), dict(block=2048, warps=16), dict(block=4096, warps=8)]


@pytest.mark.parametrize("config", BLOCKS, ids=lambda c: f"block{c['block']}-warps{c['warps']}")
@pytest.mark.parametrize("width, kind", [(77, "per_token"), (320, "per_sample")])
def test_gated_residual(config, width, kind):
    """Blocks narrower than a row (77 channels: the last block of a row masked) and wider (320)."""
    shape = (2, 5, width)
    x, y = randn(shape, torch.bfloat16, seed=1), randn(shape, torch.bfloat16, seed=2)
    gate = modulation(shape, kind, seed=3)
    with configured("gated_residual", BlockConfig(**config)):
        actual = wan_kernels.gated_residual(x, y, gate)
    assert_matches(actual, reference.gated_residual(x, y, gate), torch.bfloat16)


@pytest.mark.parametrize("config", BLOCKS, ids=lambda c: f"block{c['block']}-warps{c['warps']}")
@pytest.mark.parametrize("name", ["residual_apply", "residual_capture"])
def test_residual_ops(config, name):
    """770 elements: the last block part-filled at every block size."""
    a, b = randn((2, 5, 77), torch.bfloat16, seed=1), randn((2, 5, 77), seed=2)
    with configured(name, BlockConfig(**config)):
        actual = getattr(wan_kernels, name)(a, b)
    assert_matches(actual, getattr(reference, name)(a, b), torch.float32)


@pytest.mark.parametrize("op, config", [("gated_residual", RowConfig()), ("rel_l1", BlockConfig())])
def test_an_op_is_configured_by_its_kernel_kind(op, config):
    with pytest.raises(TypeError, match=f"^{op} launches with a "), configured(op, config):
        pass


@pytest.mark.parametrize("name", ["rel_l1", "rel_l2"])
def test_the_finishing_program_sums_the_partials_in_passes(monkeypatch, name):
    """100 partial sums (a token a program) in passes of 32, the last one part-filled."""
    from wan_kernels.triton import rel_error

    monkeypatch.setattr(rel_error, "_FINISH_MAX_BLOCK", 32)
    assert rel_error._finish_geometry(100) == (32, 4)
    b = randn((2, 50, 8), seed=1)
    a = b + randn(b.shape, seed=2, scale=0.1)
    with configured(name, RowConfig(chunk=8)):
        actual = getattr(wan_kernels, name)(a, b, 1)
    torch.testing.assert_close(actual, getattr(reference, name)(a, b, 1), rtol=REDUCTION_RTOL, atol=0)


@pytest.mark.parametrize("count, geometry", [(1, (32, 4)), (1000, (1024, 4)), (2048, (2048, 8)),
                                             (18900, (4096, 8))])
def test_the_finishing_program_takes_up_to_4096_partials_a_pass(count, geometry):
    from wan_kernels.triton.rel_error import _finish_geometry

    assert _finish_geometry(count) == geometry


@pytest.mark.parametrize("field, value", [("programs_per_sm", 4), ("one_launch", True)])
def test_reduction_fields_apply_to_the_relative_errors_only(field, value):
    refusal = f"RowConfig.{field} applies to rel_l1, rel_l2, not layernorm_modulate"
    config = RowConfig(**{field: value})
    with pytest.raises(ValueError, match=refusal), configured("layernorm_modulate", config):
        pass


@pytest.mark.parametrize("name", ["rel_l1", "rel_l2"])
def test_one_launch_leaves_its_counter_at_zero_for_the_next(name):
    """Calls of different grids in turn, the first and last of one program, and no tokens (no
    program, so the second launch gives the empty sums' NaN): each counts from 0, as only a
    counter left at 0 lets it find its last program."""
    from wan_kernels.triton.counters import counter_for

    fn = getattr(wan_kernels, name)
    with configured(name, RowConfig(tokens=2, one_launch=True)):
        for shape in [(1, 2, 77), (2, 5, 77), (3, 7, 64), (1, 0, 77), (1, 1, 77)]:
            b = randn(shape, seed=1)
            a = b + randn(shape, seed=2, scale=0.1)
            torch.testing.assert_close(fn(a, b, 1), getattr(reference, name)(a, b, 1), rtol=REDUCTION_RTOL,
                                       atol=0, equal_nan=True)
            assert counter_for(b.device).item() == 0


def test_one_launch_reduces_more_partials_than_its_tile_holds_in_passes():
    """300 programs of one warp: their last reduces the 300 partials 128 at a time."""
    b = randn((1, 300, 8), seed=1)
    a = b + randn(b.shape, seed=2, scale=0.1)
    with configured("rel_l1", RowConfig(warps=1, one_launch=True)):
        actual = wan_kernels.rel_l1(a, b, 1)
    torch.testing.assert_close(actual, reference.rel_l1(a, b, 1), rtol=REDUCTION_RTOL, atol=0)


def test_two_launches_compile_one_partial_sums_kernel_whatever_the_grid(monkeypatch):
    """The one-launch constants are fixed where unused: a partial-sums kernel that varied with the
    grid would compile again for each count of partials."""
    from wan_kernels.triton import rel_error

    launches = []

    class Recorded:
        def __getitem__(self, grid):
            return lambda *args, **constants: launches.append(constants)

    monkeypatch.setattr(rel_error, "_partial_sums_kernel", Recorded())
    monkeypatch.setattr(rel_error, "_finish_kernel", Recorded())
    for length in (10, 3000, 30000):
        x = torch.zeros((1, length, 64))
        wan_kernels.rel_l1(x, x, 1)
    partial_sums = launches[0::2]
    assert partial_sums[0] == partial_sums[1] == partial_sums[2]
    assert len({launch["BLOCK"] for launch in launches[1::2]}) == 3  # the finishing kernel's do vary


class _CountedLaunches:
    """A Triton kernel whose launches are counted."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


@pytest.fixture
def finish_launches(monkeypatch):
    """The finishing kernel's launches, counted."""
    from wan_kernels.triton import rel_error

    counted = _CountedLaunches(rel_error._finish_kernel)
    monkeypatch.setattr(rel_error, "_finish_kernel", counted)
    return counted


@pytest.mark.parametrize("config, launches", [(dict(), 2), (dict(one_launch=True), 1)])
def test_one_launch_spares_the_finishing_launch(finish_launches, config, launches):
    b = randn((2, 5, 77), seed=1)
    a = b + randn(b.shape, seed=2, scale=0.1)
    with configured("rel_l1", RowConfig(**config)):
        wan_kernels.rel_l1(a, b, 1)
    assert 1 + finish_launches.launches == launches


def test_one_launch_counters_in_and_out_of_captures(finish_launches, monkeypatch):
    """A block is zeroed only outside a capture (inside one, the zeroing would be captured, not
    run): an eager call adds one once half of the last is taken, and a capture that has taken the
    last block's last counter zeroes one of its own, still in one launch. Every counter is a
    16-byte-aligned 0, no two alike."""
    from wan_kernels.triton import counters

    monkeypatch.setattr(counters, "COUNTERS_A_BLOCK", 4)
    monkeypatch.setattr(counters, "_counters", {})
    cpu = torch.device("cpu")
    b = randn((2, 5, 77), seed=1)
    a = b + randn(b.shape, seed=2, scale=0.1)
    in_capture = False
    monkeypatch.setattr(counters, "capturing", lambda device: in_capture)
    with configured("rel_l1", RowConfig(tokens=2, one_launch=True)):
        eager = wan_kernels.rel_l1(a, b, 1)  # the stream's counter: 1 of the block's 4
        in_capture = True
        taken = [counters.counter_for(cpu) for _ in range(2)]
        in_capture = False
        assert torch.equal(wan_kernels.rel_l1(a, b, 1), eager)
        assert len(counters._counters[cpu].blocks) == 2
        in_capture = True
        taken += [counters.counter_for(cpu) for _ in range(5)]  # the new block's 4, then its own
        assert torch.equal(wan_kernels.rel_l1(a, b, 1), eager)
    assert finish_launches.launches == 0
    assert len(counters._counters[cpu].blocks) == 2
    own = taken[-1]
    assert not any(own.untyped_storage().data_ptr() == block.untyped_storage().data_ptr()
                   for block in counters._counters[cpu].blocks)
    everyone = [counters._counters[cpu].by_stream[0], *taken]
    assert all(int(c) == 0 and c.data_ptr() % 16 == 0 for c in everyone)
    assert len({c.data_ptr() for c in everyone}) == len(everyone)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and streams need a GPU")
def test_one_launch_reductions_running_at_once_count_apart():
    """Two graphs, each a captured reduction, replayed at once on two streams beside eager calls
    on a third: were a counter shared, a program would find itself last too early or never."""
    device = torch.device("cuda")
    b = randn((2, 4096, 1024), seed=1).to(device)
    a = b + randn(b.shape, seed=2, scale=0.1).to(device)
    expected = reference.rel_l1(a, b, 1)
    streams = [torch.cuda.Stream() for _ in range(3)]
    with configured("rel_l1", RowConfig(chunk=256, one_launch=True)):
        wan_kernels.rel_l1(a, b, 1)  # compiles, and sets counters aside outside the captures
        graphs, outs = [torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()], []
        for graph in graphs:
            with torch.cuda.graph(graph):
                outs.append(wan_kernels.rel_l1(a, b, 1))
        results = []
        for stream in streams:
            stream.wait_stream(torch.cuda.current_stream())
        for _ in range(20):
            for graph, out, stream in zip(graphs, outs, streams, strict=False):
                with torch.cuda.stream(stream):
                    graph.replay()
                    results.append(out.clone())
            with torch.cuda.stream(streams[2]):
                results.append(wan_kernels.rel_l1(a, b, 1))
        torch.cuda.synchronize()
    for result in results:
        torch.testing.assert_close(result, expected, rtol=REDUCTION_RTOL, atol=0)


def test_rows_wider_than_registers_hold_are_chunked_by_default():
    """20,000 channels: past the widest row a program keeps whole, so every row op walks chunks."""
    shape = (1, 2, 20000)
    x = randn(shape, torch.bfloat16, seed=1)
    shift, scale = modulation(shape, "per_sample", seed=2), modulation(shape, "per_sample", seed=3)
    assert_matches(wan_kernels.layernorm_modulate(x, shift, scale, EPS),
                   reference.layernorm_modulate(x, shift, scale, EPS), torch.bfloat16)
    weight = 1 + randn((20000,), seed=4, scale=0.1)
    angles = randn((2, 1, 80), seed=5, scale=3.0)
    args = (x, x, weight, weight, angles.cos(), angles.sin(), 125, EPS)
    assert_matches(wan_kernels.qk_rmsnorm_rope(*args)[0], reference.qk_rmsnorm_rope(*args)[0], torch.bfloat16)


@pytest.mark.parametrize("width", [1, 2, 3, 6, 64])
def test_split_rows_at_tiny_and_power_of_two_widths(width):
    """Split rows where the second tile is all padding (1, 2), a pair (3, 6) or absent (64)."""
    shape = (2, 5, width)
    x = randn(shape, torch.bfloat16, seed=1)
    shift, scale = modulation(shape, "per_token", seed=2), modulation(shape, "per_token", seed=3)
    b = randn(shape, torch.bfloat16, seed=4)
    with configured("layernorm_modulate", RowConfig(split=True)):
        actual = wan_kernels.layernorm_modulate(x, shift, scale, EPS)
    assert_matches(actual, reference.layernorm_modulate(x, shift, scale, EPS), torch.bfloat16)
    with configured("rel_l2", RowConfig(split=True, tokens=4)):
        actual = wan_kernels.rel_l2(x, b, 1)
    torch.testing.assert_close(actual, reference.rel_l2(x, b, 1), rtol=REDUCTION_RTOL, atol=0)
    if width % 2 == 0:
        weight = 1 + randn((width,), seed=5, scale=0.1)
        angles = randn((5, 1, width // 2), seed=6, scale=3.0)
        args = (x, b, weight, weight, angles.cos(), angles.sin(), 1, EPS)
        with configured("qk_rmsnorm_rope", RowConfig(split=True)):
            actual = wan_kernels.qk_rmsnorm_rope(*args)
        for a, e in zip(actual, reference.qk_rmsnorm_rope(*args), strict=True):
            assert_matches(a, e, torch.bfloat16)


@pytest.mark.parametrize("op, width, fields", [
    ("layernorm_modulate", 3072, dict(warps=8)),
    ("layernorm_modulate", 5120, dict(split=True, warps=4)),
    ("gated_residual_layernorm_modulate", 3072, dict(warps=8)),
    ("gated_residual_layernorm_modulate", 5120, dict(split=True, warps=4)),
    ("qk_rmsnorm_rope", 3072, dict(split=True, warps=4)),
    ("qk_rmsnorm_rope", 5120, dict(split=True, warps=4)),
    ("rel_l1", 3072, dict(chunk=1024, tokens=4, warps=8)),
    ("rel_l2", 5120, dict(chunk=1024, tokens=4, warps=8)),
])
def test_defaults_at_the_dit_widths_are_the_geometries_measured(op, width, fields):
    """The sweep's fastest on an H100 (launch._default cites the numbers; for the fused norm at
    5120 a tie with whole rows on 8 warps), or for the norms at 3072, whose whole rows already
    reach copy bandwidth, the geometry measured there."""
    from wan_kernels.triton.launch import row_config

    assert row_config(op, width) == RowConfig(**fields)


def test_a_whole_row_past_the_register_limit_is_refused():
    x = randn((1, 1, 20000))
    refusal = "layernorm_modulate: the triton backend holds rows of at most 16384 channels whole"
    with configured("layernorm_modulate", RowConfig()), pytest.raises(ValueError, match=refusal):
        wan_kernels.layernorm_modulate(x, x, x, EPS)


def test_more_samples_than_a_grid_dimension_holds_are_refused():
    x = randn((65536, 1, 1))
    refusal = "gated_residual: the triton backend launches at most .* and 65535 samples, got 65536"
    with pytest.raises(ValueError, match=refusal):
        wan_kernels.gated_residual(x, x, x)


@pytest.mark.parametrize("width, tiles", [
    (5120, (4096, 1024)), (3072, (2048, 1024)), (4096, (4096, 0)), (77, (64, 16)), (3, (2, 2)), (2, (2, 0)),
    (1, (2, 0)),
])
def test_split_rows_take_the_widest_power_of_two_then_the_rest(width, tiles):
    assert RowConfig(split=True).tiles("op", width) == tiles
    assert RowConfig().tiles("op", width) == (max(2, 1 << (width - 1).bit_length()), 0)


@pytest.mark.parametrize("fields, message", [
    (dict(tokens=3), "tokens must be a power of two"), (dict(warps=0), "warps must be a power of two"),
    (dict(chunk=48), "chunk must be 0"), (dict(chunk=1), "chunk must be 0"),
    (dict(chunk=64, split=True), "split applies to whole rows"),
    (dict(programs_per_sm=-1), "programs_per_sm must be 0"), (dict(chunk=64, stages=0), "stages must be 1"),
    (dict(stages=2), "stages pipelines the walk over a row's chunks: give chunk > 0"),
])
def test_row_config_rejects_bad_geometry(fields, message):
    with pytest.raises(ValueError, match=message):
        RowConfig(**fields)


@pytest.mark.parametrize("fields, message", [
    (dict(block=1000), "BlockConfig.block must be a power of two"),
    (dict(warps=3), "BlockConfig.warps must be a power of two"),
])
def test_block_config_rejects_bad_geometry(fields, message):
    with pytest.raises(ValueError, match=message):
        BlockConfig(**fields)
