"""wanpy: Wan2.1/Wan2.2 video generation in-process, on stable-diffusion.cpp."""

from __future__ import annotations

from wanpy import _core, _logging
from wanpy.errors import (
    AllocationTooLargeError,
    BackendUnavailableError,
    BusyError,
    Cancelled,
    EncodeError,
    GenerationError,
    LoadError,
    ModelFileError,
    WanpyError,
)

from wanpy.system import Device, EnvVar, SystemInfo, devices, system_info

__version__ = "0.1.0"

_logging.install(_core)

__all__ = [
    "__version__",
    "Device",
    "EnvVar",
    "SystemInfo",
    "devices",
    "system_info",
    "AllocationTooLargeError",
    "BackendUnavailableError",
    "BusyError",
    "Cancelled",
    "EncodeError",
    "GenerationError",
    "LoadError",
    "ModelFileError",
    "WanpyError",
]
