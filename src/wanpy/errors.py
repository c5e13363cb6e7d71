"""wanpy's exception hierarchy: one root, specific subclasses carrying data.

Argument errors use the builtins (ValueError, TypeError, FileNotFoundError); what
goes wrong in the engine or the pipeline raises a subclass of WanpyError.
"""

from __future__ import annotations

__all__ = [
    "WanpyError",
    "ModelFileError",
    "LoadError",
    "GenerationError",
    "Cancelled",
    "AllocationTooLargeError",
    "EncodeError",
]


class WanpyError(Exception):
    """Root of every error wanpy raises about the engine, the models or the outputs."""


class ModelFileError(WanpyError, ValueError):
    """A model file is unreadable, truncated, or not the component it was given as."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class LoadError(WanpyError):
    """sd.cpp could not load the model files; ``sdcpp_errors`` holds the error lines it logged."""

    def __init__(self, message: str, *, sdcpp_errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.sdcpp_errors = tuple(sdcpp_errors)


class GenerationError(WanpyError):
    """sd.cpp failed while generating, or returned something other than what was asked."""


class Cancelled(WanpyError):
    """A generation was stopped by its callback, a progress bar interrupt or Ctrl-C."""


class AllocationTooLargeError(WanpyError, MemoryError):
    """A single buffer, or a phase's total, would exceed what the device allows.

    Attributes carry the figures: ``required`` and ``limit`` (bytes), the offending
    ``allocation`` and the computed ``suggestions`` that would fit instead.
    """

    def __init__(self, message: str, *, required: int, limit: int, allocation: object = None,
                 suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.required = required
        self.limit = limit
        self.allocation = allocation
        self.suggestions = tuple(suggestions)


class EncodeError(WanpyError):
    """Writing a video file failed; no partial file was left behind."""

    def __init__(self, message: str, *, path: str | None = None, ffmpeg_message: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.ffmpeg_message = ffmpeg_message
