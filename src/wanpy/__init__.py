"""wanpy: Wan2.1/Wan2.2 video generation in-process, on stable-diffusion.cpp."""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "__version__",
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
