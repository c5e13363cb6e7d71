"""wanpy: Wan2.1/Wan2.2 video generation in-process, on stable-diffusion.cpp."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wanpy import _core, _logging
from wanpy._version import __version__
from wanpy.cache import StepCache
from wanpy.catalogue import FAMILIES, WanFamily
from wanpy.errors import (
    AllocationTooLargeError,
    Cancelled,
    EncodeError,
    GenerationError,
    LoadError,
    ModelFileError,
    WanpyError,
)
from wanpy.memory import Allocation, FitChoice, PhaseTotal, Preflight, choose_fit, preflight
from wanpy.oneshot import generate_video
from wanpy.pipeline import BackendFallbackWarning, WanPipeline
from wanpy.progress import Progress
from wanpy.request import GenerationRequest, HighNoise, Lora, RequestOptions, build_request
from wanpy.system import Device, EnvVar, SystemInfo, devices, system_info
from wanpy.video import Timings, Video, concatenate

if TYPE_CHECKING:
    from wanpy.encode import VideoWriter, save_video
    from wanpy.probe import VideoInfo, probe_video

_logging.install(_core)

# imported on first use: writing and probing video files (ffmpeg) is not needed to generate
_LAZY = {"VideoWriter": "wanpy.encode", "save_video": "wanpy.encode", "VideoInfo": "wanpy.probe",
         "probe_video": "wanpy.probe"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wanpy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "__version__",
    "Allocation",
    "BackendFallbackWarning",
    "Device",
    "EnvVar",
    "FAMILIES",
    "FitChoice",
    "GenerationRequest",
    "HighNoise",
    "Lora",
    "PhaseTotal",
    "Preflight",
    "Progress",
    "RequestOptions",
    "StepCache",
    "SystemInfo",
    "Timings",
    "Video",
    "VideoInfo",
    "VideoWriter",
    "WanFamily",
    "WanPipeline",
    "build_request",
    "choose_fit",
    "concatenate",
    "devices",
    "generate_video",
    "preflight",
    "probe_video",
    "save_video",
    "system_info",
    "AllocationTooLargeError",
    "Cancelled",
    "EncodeError",
    "GenerationError",
    "LoadError",
    "ModelFileError",
    "WanpyError",
]
