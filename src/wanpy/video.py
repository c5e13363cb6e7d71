"""Results: ``Video`` (frames + everything that shaped them) and its ``Timings``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from wanpy.request import GenerationRequest


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase, as sd.cpp measured them (None: phase not run)."""

    load: float | None = None
    lora_loading: float | None = None  # reading LoRA files (each generation that uses LoRAs)
    text_encoding: float | None = None
    image_encoding: float | None = None
    high_noise_sampling: float | None = None
    sampling: float | None = None  # the low-noise pass for Wan2.2 A14B, the only pass otherwise
    vae_decode: float | None = None
    total: float | None = None

    def __str__(self) -> str:
        parts = [f"{f.name.replace('_', ' ')} {getattr(self, f.name):.2f} s"
                 for f in fields(self) if getattr(self, f.name) is not None]
        return ", ".join(parts) or "no timings"


@dataclass(frozen=True)
class Video:
    """Generated frames, uint8 (T, H, W, 3), and what produced them.

    ``request`` is the validated ``GenerationRequest`` (``request.to_dict()`` for JSON);
    ``params`` is its record plus what the run decided (device, backend, model files, the
    pre-flight's figures, ``fit="auto"``'s choice): one JSON-serialisable dict.
    ``model_evaluations``: the diffusion-model evaluations sd.cpp ran (a step with cfg != 1
    runs two); ``cached_evaluations``: those a step cache replaced (both experts of Wan2.2
    A14B together; ``params["evaluations"]`` has them per sampling pass). sd.cpp counts them
    (None for a video that was not generated here)."""

    frames: np.ndarray
    fps: Fraction
    seed: int | None
    params: dict[str, Any] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    request: GenerationRequest | None = field(default=None, repr=False)
    model_evaluations: int | None = None
    cached_evaluations: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        """Seconds: frames / fps (161 frames at 16 fps: 10.0625 s)."""
        return float(self.num_frames / self.fps)

    def save(self, path: str | os.PathLike[str] | BinaryIO, *, format: str | None = None,
             codec: str | None = None, quality: int | None = None, pad: bool = False) -> Path | None:
        """Write the frames; the container follows the extension (.webm, .mp4, .gif).

        ``path`` may also be a writable binary file object (``io.BytesIO``, a response body):
        then ``format`` ("webm", "mp4" or "gif") names the container, and the whole encoded
        file is written to it once the encode succeeded. Every frame is written at
        ``self.fps``; see :func:`wanpy.save_video`. WebM and MP4 files carry the request as a
        tag (``wanpy.probe_video(path).request``). Returns the path written (None for a file
        object).
        """
        from wanpy.encode import SUPPORTED_EXTENSIONS, save_video

        if isinstance(path, (str, os.PathLike)):
            if format is not None:
                raise TypeError("format= is for file objects; a path's extension names its container")
            tags = self._tags(os.fspath(path).lower().endswith(".gif"))
            return save_video(path, self.frames, fps=self.fps, codec=codec, quality=quality, pad=pad, metadata=tags)
        if not hasattr(path, "write"):
            raise TypeError(f"path must be a path or a writable binary file object, got {type(path).__name__}")
        formats = [e.lstrip(".") for e in SUPPORTED_EXTENSIONS]
        if format not in formats:
            raise ValueError(f"format must be one of {', '.join(map(repr, formats))} to write to a file object, "
                             f"got {format!r}")
        with tempfile.TemporaryDirectory(prefix="wanpy-") as folder:
            written = save_video(Path(folder) / f"video.{format}", self.frames, fps=self.fps, codec=codec,
                                 quality=quality, pad=pad, metadata=self._tags(format == "gif"))
            with open(written, "rb") as encoded:
                shutil.copyfileobj(encoded, path)
        return None

    def interpolate(self, fps: float | Fraction) -> Video:
        """This video at a higher ``fps``, in-between frames made by motion-compensated
        interpolation (``wanpy.interpolate``): the same time span, so N frames at 16 fps become
        2N - 1 at 32 fps. Smoother motion at the same speed; save it at the original fps for
        slow motion. ``params["interpolated_from"]`` records the original fps."""
        from wanpy.interpolate import interpolate_frames

        frames, new_fps = interpolate_frames(self.frames, self.fps, fps)
        params = {**self.params, "interpolated_from": str(self.fps), "fps": str(new_fps)}
        return dataclasses.replace(self, frames=frames, fps=new_fps, params=params)

    def _tags(self, gif: bool) -> dict[str, str] | None:
        """The request, as JSON, for the file's tags (read back as ``probe_video(...).request``)."""
        if self.request is None or gif:
            return None
        return {"wanpy_request": json.dumps(self.request.to_dict(), separators=(",", ":"))}

    def _repr_html_(self) -> str:
        """In a notebook: the clip, playable inline (``wanpy.display``)."""
        from wanpy.display import video_html

        return video_html(self)

    def __str__(self) -> str:
        return (f"Video: {self.num_frames} frames {self.width}x{self.height} at {self.fps} fps "
                f"({self.duration:.2f} s), seed {self.seed}; {self.timings}")


def concatenate(videos: Sequence[Video]) -> Video:
    """Join continued clips, dropping each continuation's first frame (the shared one).

    A clip made with ``continue_from=previous`` starts from ``previous``'s last frame,
    so joining N clips gives ``sum(frames) - (N - 1)`` frames.
    """
    if isinstance(videos, (str, bytes, Video)) or not isinstance(videos, Sequence):
        raise TypeError(f"videos must be a sequence of wanpy.Video, got {type(videos).__name__}")
    videos = list(videos)
    if not videos:
        raise ValueError("concatenate needs at least one video")
    for i, v in enumerate(videos):
        if not isinstance(v, Video):
            raise TypeError(f"videos[{i}] must be a wanpy.Video, got {type(v).__name__}")
    first = videos[0]
    for i, v in enumerate(videos[1:], start=1):
        if v.fps != first.fps:
            raise ValueError(f"video {i} has fps {v.fps}, video 0 has {first.fps}")
        if v.frames.shape[1:] != first.frames.shape[1:]:
            raise ValueError(f"video {i} frames are {v.frames.shape[1:]}, video 0 frames are {first.frames.shape[1:]}")
    frames = np.concatenate([first.frames] + [v.frames[1:] for v in videos[1:]], axis=0)
    total = sum((v.timings.total or 0.0) for v in videos)
    return Video(frames=frames, fps=first.fps, seed=first.seed,
                 params={"concatenated": [v.params for v in videos]}, timings=Timings(total=total))
