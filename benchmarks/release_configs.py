"""The architectures of the Wan2.2 releases' DiTs, for benchmarks that need no checkpoint (the
runtime itself reads them from each release's ``config.json`` and tensor shapes)."""

from __future__ import annotations

from wan_runtime.models import DiTConfig
from wan_runtime.models.s2v_config import S2VConfig

# One i2v-A14B expert (both experts share it).
A14B = DiTConfig(
    model_type="i2v", in_dim=36, out_dim=16, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40
)
TI2V_5B = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30
)
# The S2V DiT's defaults are the release's (12 audio-injection blocks of 40).
S2V_14B = S2VConfig()
