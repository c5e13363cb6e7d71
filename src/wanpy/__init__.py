"""wanpy: Wan2.1/Wan2.2 video generation in-process, on stable-diffusion.cpp."""

from __future__ import annotations

from wanpy import _core, _logging
from wanpy.errors import (
    AllocationTooLargeError,
    Cancelled,
    EncodeError,
    GenerationError,
    LoadError,
    ModelFileError,
    WanpyError,
)

from wanpy.families import FAMILIES
from wanpy.preflight import Allocation, PhaseTotal, Preflight, preflight
from wanpy.pipeline import BackendFallbackWarning, Lora, WanPipeline, generate_video
from wanpy.progress import Progress
from wanpy.system import Device, EnvVar, SystemInfo, devices, system_info
from wanpy.video import Timings, Video, concatenate
from wanpy.video_io import VideoInfo, VideoWriter, WebMWriter, probe_video, save_video, write_webm

__version__ = "0.1.0"

_logging.install(_core)

__all__ = [
    "__version__",
    "Allocation",
    "BackendFallbackWarning",
    "Device",
    "FAMILIES",
    "Lora",
    "PhaseTotal",
    "Preflight",
    "Progress",
    "Timings",
    "Video",
    "VideoInfo",
    "VideoWriter",
    "WebMWriter",
    "WanPipeline",
    "concatenate",
    "generate_video",
    "preflight",
    "probe_video",
    "save_video",
    "write_webm",
    "EnvVar",
    "SystemInfo",
    "devices",
    "system_info",
    "AllocationTooLargeError",
    "Cancelled",
    "EncodeError",
    "GenerationError",
    "LoadError",
    "ModelFileError",
    "WanpyError",
]
