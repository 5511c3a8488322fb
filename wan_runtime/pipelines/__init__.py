"""The generation pipelines: prompt (and image) -> text and image encoding -> denoising -> video.

``load_pipeline(task, ckpt_dir, ...)`` returns a ``Pipeline`` whose ``generate`` matches the
official ``WanI2V.generate`` (i2v-A14B), ``WanTI2V.generate`` (ti2v-5B) or ``WanS2V.generate``
(s2v-14B) for the same seed; its ``estimate_memory`` (or ``estimate_memory`` of ``check_pipeline``'s
plan, before loading) what a video takes of the device's memory at its peak; ``host_plan`` what the
weights take of the CPU's; ``fit_memory``, before loading, where the models wait so that the videos
fit a GPU's memory.
"""

from wan_runtime.pipelines.activation_memory import MemoryEstimate, StagePeak, VideoShape, estimate_memory
from wan_runtime.pipelines.base import Pipeline
from wan_runtime.pipelines.host_memory import FreeMemory, HostPlan, free_memory, host_plan
from wan_runtime.pipelines.i2v import I2VPipeline
from wan_runtime.pipelines.loading import check_output_size, check_pipeline, load_pipeline
from wan_runtime.pipelines.memory_fit import MemoryFit, fit_memory
from wan_runtime.pipelines.report import RunReport, RunSetup, StageOutOfMemory
from wan_runtime.pipelines.s2v import S2VPipeline
from wan_runtime.pipelines.step_events import StepEvent
from wan_runtime.pipelines.ti2v import TI2VPipeline

__all__ = [
    "FreeMemory", "HostPlan", "I2VPipeline", "MemoryEstimate", "MemoryFit", "Pipeline", "RunReport",
    "RunSetup", "S2VPipeline", "StagePeak", "StageOutOfMemory", "StepEvent", "TI2VPipeline", "VideoShape",
    "check_output_size", "check_pipeline", "estimate_memory", "fit_memory", "free_memory", "host_plan",
    "load_pipeline",
]
