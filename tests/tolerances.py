"""Numerical tolerances of the test suite, stated once: relative L2 error ``|a-b|/|b|``."""

# Our float32 model against the official one on the CPU: only summation order may differ.
DIT_FP32_VS_OFFICIAL = 1e-5
# The same float32 pipeline with the DiT blocks compiled (Inductor's fused kernels): only
# summation order may differ.
COMPILED_VS_EAGER_FP32 = 1e-5
# The same float32 pipeline over several processes (sequence parallelism, FSDP): the same
# arithmetic, but FSDP gathers weights into buffers of its own, where the CPU's matrix products may
# take another path than on the memory-mapped checkpoint (observed: 1.3e-6 for i2v-A14B), and the
# VAE's bands of rows have convolutions of other shapes, blocked otherwise (about 1e-6 for the tiny
# VAEs, tests/distributed/test_vae_rows.py).
PARALLEL_VS_ONE_PROCESS_FP32 = 1e-5
# The same in bfloat16, against one process computing from weights converted to bfloat16 as FSDP
# uses them: an order under what that conversion itself changes (2.9e-3 on the tiny ti2v-5B);
# observed equal but for the float32 VAE's bands.
PARALLEL_VS_ONE_PROCESS_BF16 = 3e-4
# A bfloat16 model against its own float32 weights: rounding of the matrix products alone.
DIT_BF16_VS_FP32 = 3e-2


def rel_l2(actual, expected) -> float:
    """Relative L2 error of ``actual`` against ``expected``."""
    return float((actual.double() - expected.double()).norm() / expected.double().norm())
# A pipeline with a LoRA merged as it loads against the same pipeline on a checkpoint holding the
# weights merged by diffusers' reading of that LoRA (its alpha folded into another factor): the
# weights differ by float32 rounding (1e-7), which the steps carry into the video.
LORA_VS_MERGED_CHECKPOINT = 1e-5
