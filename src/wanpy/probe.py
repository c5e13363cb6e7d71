"""Describe a video file (frame count, exact frame rate, size, codec) with the ffmpeg of
``imageio-ffmpeg``, and locate that ffmpeg for the encoder.

:func:`probe_video` decodes every frame with ``ffmpeg -i FILE -map 0:v:0 -f null -`` and
reports ffmpeg's own count of decoded frames, like ``ffprobe -count_frames``
(``imageio_ffmpeg.count_frames_and_secs`` counts the frames ffmpeg *outputs* after its
frame-rate conversion instead). The frame rate is the exact rational ffmpeg assigns the
decoded stream (its guess from ``r_frame_rate``, e.g. 30000/1001), not the rounded
"29.97 fps" it prints. GIF stores no rate, only per-frame delays, so for a GIF this is
ffmpeg's guess from the delays (delays longer than its 5 s analysis window read as
100 fps). The path must be a regular file: a FIFO, socket or device is refused before
ffmpeg runs (ffmpeg would block on a FIFO until something writes to it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
from dataclasses import field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from wanpy.errors import EncodeError
from wanpy.paths import check_input_file, printable

__all__ = ["VideoInfo", "ffmpeg_exe", "ffmpeg_path_arg", "probe_video", "read_frames"]

logger = logging.getLogger("wanpy")


def ffmpeg_exe() -> str:
    """The ffmpeg executable wanpy runs (imageio-ffmpeg's, or ``IMAGEIO_FFMPEG_EXE``)."""
    import imageio_ffmpeg  # here, not at import: generating frames needs no ffmpeg

    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # no bundled binary and none configured
        raise EncodeError(f"no ffmpeg executable available: {exc}") from exc


def ffmpeg_path_arg(path: str | os.PathLike[str]) -> str:
    # "file:" stops ffmpeg from reading a ':' in the name as a protocol prefix.
    return "file:" + os.fspath(path)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found in a video file.

    ``frame_count`` counts decoded frames; ``fps`` is the stream's exact frame rate;
    ``duration`` is ``frame_count / fps`` in seconds; ``container_duration`` is the
    duration the container declares (as ffmpeg prints it, to 1/100 s), or None.
    """

    path: Path
    frame_count: int
    fps: Fraction
    width: int
    height: int
    codec: str
    duration: float
    container_duration: float | None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def request(self) -> dict[str, Any] | None:
        """The ``GenerationRequest`` record wanpy embedded when it wrote the file (``Video.save``),
        as ``request.to_dict()`` gave it; None for other files."""
        text = self.metadata.get("wanpy_request")
        return None if text is None else dict(json.loads(text))

    def __str__(self) -> str:
        if self.fps.denominator == 1:
            rate = f"{self.fps.numerator} fps"
        else:
            rate = f"{self.fps} fps (~{float(self.fps):.3f})"
        # printable(): a name with undecodable bytes must not break print()
        return (f"{printable(self.path.name)}: {self.frame_count} frames, {self.width}x{self.height}, "
                f"{self.codec}, {rate}, {self.duration:.6g} s")


_RE_GRAPH = re.compile(r"input from stream \d+:\d+ @ [^\]]*\]\s*w:(\d+) h:(\d+) pixfmt:\S+ "
                       r"tb:\d+/\d+ fr:(\d+)/(\d+)")
_RE_VIDEO = re.compile(r"Stream #\d+:\d+[^:\n]*: Video: ([A-Za-z0-9_]+)([^\n]*)")
_RE_DECODED = re.compile(r"Input stream #\d+:\d+ \(video\):.*?(\d+) frames decoded"
                         r"(?:; (\d+) decode errors)?")
_RE_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _parse_fps_text(text: str) -> Fraction | None:
    # Fallback only: "16 fps", "29.97 fps" or "25 tbr" as printed (rounded by ffmpeg).
    m = re.search(r"([\d.]+)(k?) (?:fps|tbr)", text)
    if not m or m.group(2):
        return None
    value = Fraction(m.group(1))
    return value if value > 0 else None


def _unreadable(shown: str, log: str, returncode: int) -> ValueError:
    lines = [line.strip() for line in log.splitlines()
             if line.strip() and not line.startswith("Exiting with exit code")]
    errors = [line for line in lines if "rror" in line or not line.startswith("[")]
    message = "\n".join(errors[-4:]) or f"ffmpeg exited with status {returncode}"
    reason = "has no video stream" if returncode == 0 else "is not a readable video"
    return ValueError(f"{shown} {reason}: {message}")


def _frame_count(shown: str, log: str) -> int:
    decoded = _RE_DECODED.search(log)
    if decoded is not None:
        if decoded.group(2) and int(decoded.group(2)):
            logger.warning("%s: ffmpeg reported %s decode errors", shown, decoded.group(2))
        return int(decoded.group(1))
    counts = re.findall(r"frame=\s*(\d+)", log)  # older ffmpeg: the final progress line
    if not counts:
        raise ValueError(f"{shown}: could not read ffmpeg's frame count")
    return int(counts[-1])


def _size_and_rate(shown: str, log: str, stream: str) -> tuple[int, int, Fraction]:
    fps: Fraction | None = None
    graph = _RE_GRAPH.search(log)
    if graph is not None:
        width, height = int(graph.group(1)), int(graph.group(2))
        num, den = int(graph.group(3)), int(graph.group(4))
        if num > 0 and den > 0:
            fps = Fraction(num, den)
    else:
        size = re.search(r", (\d+)x(\d+)[ ,\[]", stream)
        if size is None:
            raise ValueError(f"{shown}: could not read the frame size from ffmpeg's output")
        width, height = int(size.group(1)), int(size.group(2))
    if fps is None:
        fps = _parse_fps_text(stream)
    if fps is None:
        raise ValueError(f"{shown}: ffmpeg reports no frame rate for the video stream")
    return width, height, fps


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe the first video stream of ``path``, decoding every frame to count them.

    Raises ``FileNotFoundError`` if ``path`` does not exist, ``IsADirectoryError`` for a
    directory, ``ValueError`` for a FIFO, socket or device (never opened), an empty file,
    or a file that is not a readable video (with ffmpeg's message), ``PermissionError``
    if it cannot be read, and ``TypeError`` if it is not a str or os.PathLike[str].
    """
    real = check_input_file("path", path, what="video file")
    p = Path(os.path.abspath(os.fspath(path)))
    shown = printable(p)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "verbose",
           "-i", ffmpeg_path_arg(real), "-map", "0:v:0", "-f", "null", "-"]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, check=False)
    log = result.stderr.decode("utf-8", "replace")
    head = re.split(r"\nOutput #0|\nStream mapping:", log, maxsplit=1)[0]
    video = _RE_VIDEO.search(head)
    if result.returncode != 0 or video is None:
        raise _unreadable(shown, log, result.returncode)
    frame_count = _frame_count(shown, log)
    width, height, fps = _size_and_rate(shown, log, video.group(2))
    container_duration = None
    dur = _RE_DURATION.search(head)
    if dur is not None:
        container_duration = (int(dur.group(1)) * 3600 + int(dur.group(2)) * 60
                              + float(dur.group(3)))
    return VideoInfo(path=p, frame_count=frame_count, fps=fps, width=width, height=height,
                     codec=video.group(1), duration=float(frame_count / fps),
                     container_duration=container_duration, metadata=_container_tags(real))


_RE_RAW_OUTPUT = re.compile(r"Output #0.*?Video: rawvideo\b[^\n]*?, (\d+)x(\d+)", re.DOTALL)


def read_frames(path: str | os.PathLike[str], *, name: str = "path", max_frames: int | None = None) -> np.ndarray:
    """The frames of ``path``'s first video stream as RGB uint8 (T, H, W, 3), decoded once by ffmpeg as
    they are stored (no frame duplicated or dropped for a variable rate; rotation applied as players do).
    ``max_frames``: stop after that many and one more (the caller then knows there are more). Raises as
    ``probe_video`` does for a missing or unreadable file, naming ``name``."""
    real = check_input_file(name, path, what="video file")
    shown = printable(Path(os.path.abspath(os.fspath(path))))
    limit = [] if max_frames is None else ["-frames:v", str(max_frames + 1)]
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-v", "info", "-i", ffmpeg_path_arg(real),
           "-map", "0:v:0", *limit, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    log = result.stderr.decode("utf-8", "replace")
    size = _RE_RAW_OUTPUT.search(log)
    if result.returncode != 0 or size is None:
        raise _unreadable(f"{name}: {shown}", log, result.returncode)
    width, height = int(size.group(1)), int(size.group(2))
    count, rest = divmod(len(result.stdout), width * height * 3)
    if rest or count == 0:
        raise ValueError(f"{name}: {shown}: ffmpeg decoded {len(result.stdout):,} bytes, not whole {width}x{height} "
                         "RGB frames")
    return np.frombuffer(result.stdout, np.uint8).reshape(count, height, width, 3).copy()


def _container_tags(real: str) -> dict[str, str]:
    """The file's own tags, keys lowercase, as ffmpeg's ffmetadata format gives them in full
    (its log cuts long values)."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", ffmpeg_path_arg(real),
           "-f", "ffmetadata", "-"]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    tags: dict[str, str] = {}
    if result.returncode != 0:
        return tags
    for line in result.stdout.decode("utf-8", "replace").splitlines()[1:]:  # after ";FFMETADATA1"
        if line.startswith("["):  # a stream or chapter section: not the file's own tags
            break
        if line.startswith(";"):
            continue
        key, value = _ffmetadata_pair(line)
        if key:
            tags[key.lower()] = value
    return tags


def _ffmetadata_pair(line: str) -> tuple[str, str]:
    """KEY=VALUE with ffmetadata's backslash escapes ("=", ";", "#", "\\" and newline) undone."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        if c == "=" and not parts:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    return (parts[0], "".join(current)) if parts else ("", "")
