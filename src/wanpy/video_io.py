"""Write generated frames to WebM (VP9/VP8), MP4 (H.264) or GIF, and probe video files.

Encoding runs in the ffmpeg executable that ships with ``imageio-ffmpeg``; frames are
streamed to it through a pipe one at a time, so a (T, H, W, 3) array is never copied
as a whole. Unlike stable-diffusion.cpp's own writer, which stores every frame as an
independent WebP key frame, the WebM written here uses VP9 (or VP8) inter-frame
compression in constant-quality mode.

Every write is atomic: ffmpeg writes a hidden temporary file in the target directory,
which is flushed to disk and renamed over the target only when the encode succeeded.
A failed or interrupted encode leaves neither the temporary file nor a partial target
behind (an existing file at the target path is left untouched).

Quality
    ``quality`` is an integer from 0 (smallest file) to 100 (best), the same scale for
    every codec, mapped linearly onto each encoder's constant rate factor (rounded half up):

    =====  ============================  ============  =================================
    codec  crf                           quality=60    rate control
    =====  ============================  ============  =================================
    vp9    63 * (100 - quality) / 100    crf 25        constant quality (``-b:v 0``)
    vp8    4 + 59 * (100 - quality)/100  crf 28        constrained quality, 100 Mbit/s cap
    h264   51 * (100 - quality) / 100    crf 20        libx264 crf (libopenh264: fixed QP)
    =====  ============================  ============  =================================

    The default, :data:`DEFAULT_QUALITY` = 60, measured 38.3 dB RGB PSNR for VP9 on an
    832x480 synthetic moving scene whose 4:2:0 ceiling is 39.7 dB. This is not the WebP
    quality scale of stable-diffusion.cpp's ``--quality``. quality=100 is crf 0:
    near-lossless, not lossless (colour is stored as 4:2:0 YUV).

Sizes and colour
    WebM and MP4 are written as yuv420p, limited range, BT.709 matrix (VP8: BT.601, the
    only one VP8 defines), tagged in the file. yuv420p needs an even width and height:
    odd sizes raise ``ValueError`` unless ``pad=True``, which replicates the last column
    and/or row (63x47 is stored as 64x48). Frames are never cropped or resized. GIF has
    no such constraint.

GIF timing
    GIF stores each frame's delay in centiseconds. ffmpeg rounds every frame's
    timestamp to the nearest 1/100 s, so the delays alternate to keep the average rate:
    16 fps gives 6, 7, 6, 6, ... cs (161 frames last 10.06 s instead of 10.0625 s).
    Rates above 50 fps are refused, because browsers play delays below 2 cs as 10 cs.

Probing
    :func:`probe_video` decodes every frame with ``ffmpeg -i FILE -map 0:v:0 -f null -``
    and reports ffmpeg's own count of decoded frames, like ``ffprobe -count_frames``.
    (``imageio_ffmpeg.count_frames_and_secs`` counts the frames ffmpeg *outputs* after
    its frame-rate conversion instead.) The frame rate is the exact rational ffmpeg
    assigns the decoded stream (its guess from ``r_frame_rate``, e.g. 30000/1001), not
    the rounded "29.97 fps" it prints.
    A file that is not a readable video raises ``ValueError`` with ffmpeg's message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import numbers
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import imageio_ffmpeg
import numpy as np

from wanpy.errors import EncodeError
from wanpy.validation import check_fps

__all__ = [
    "DEFAULT_QUALITY",
    "SUPPORTED_EXTENSIONS",
    "VideoInfo",
    "VideoWriter",
    "WebMWriter",
    "check_output",
    "probe_video",
    "save_video",
    "write_webm",
]

logger = logging.getLogger("wanpy")

DEFAULT_QUALITY = 60
"""Default of ``quality`` (VP9 crf 25, VP8 crf 28, H.264 crf 20); see the module docs."""

SUPPORTED_EXTENSIONS = (".webm", ".mp4", ".gif")

# Codecs each container accepts; the first one is the default.
_CONTAINER_CODECS: dict[str, tuple[str, ...]] = {
    ".webm": ("vp9", "vp8"),
    ".mp4": ("h264",),
    ".gif": ("gif",),
}
_MUXERS = {".webm": "webm", ".mp4": "mp4", ".gif": "gif"}

# Each encoder's crf range as (best, worst); quality 100 -> best, 0 -> worst.
_CRF_RANGE = {"vp9": (0, 63), "vp8": (4, 63), "h264": (0, 51)}

# Measured on 2 cores, 832x480x161 (bench/bench_webm.py scene), "-deadline good":
# VP9 cpu-used 5 was both the fastest and the smallest (4: +17% bytes, 1: +1% bytes at
# 2.5x the time; 6 behaves as 5); -row-mt 1 with -threads 2 took 2.0 s instead of 2.8 s
# on idle cores. VP8 cpu-used 1 (one thread, 2.0 s) gave 28% fewer bytes and +0.7 dB
# over cpu-used 4 (0.75 s); cpu-used 0 saved 14% more at 2.9 s.
_VP9_SPEED = 5
_VP8_SPEED = 1
_GIF_MAX_FPS = 50
_STDERR_KEEP = 64 * 1024

FpsLike = int | float | Fraction | numbers.Rational
Convert = Literal["clip"]

_POPEN_GROUP: dict[str, Any]
if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    _POPEN_GROUP = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    # Own session: Ctrl-C reaches Python only, which then stops ffmpeg and cleans up,
    # instead of ffmpeg finalizing a half-written file on its own.
    _POPEN_GROUP = {"start_new_session": True}


# --------------------------------------------------------------------------- helpers


def _ffmpeg_exe() -> str:
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # no bundled binary and none configured
        raise EncodeError(f"no ffmpeg executable available: {exc}") from exc


@functools.cache
def _encoders(exe: str) -> frozenset[str]:
    """Names of the video encoders ``exe`` was built with."""
    out = subprocess.run([exe, "-hide_banner", "-nostdin", "-encoders"], capture_output=True,
                         check=False).stdout.decode("utf-8", "replace")
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0].startswith("V"):
            names.add(parts[1])
    return frozenset(names)


def _threads() -> int:
    # ffmpeg runs libvpx-vp9 single-threaded unless told otherwise.
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 16))


def _ffmpeg_path_arg(path: Path) -> str:
    # "file:" stops ffmpeg from reading a ':' in the name as a protocol prefix.
    return "file:" + os.fspath(path)


def _check_quality(quality: object) -> int:
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral):
        raise TypeError(f"quality must be an int from 0 to 100, got {quality!r}")
    q = int(quality)
    if not 0 <= q <= 100:
        raise ValueError(f"quality must be between 0 and 100, got {q}")
    return q


def _crf(codec: str, quality: int) -> int:
    best, worst = _CRF_RANGE[codec]
    # Integer round-half-up of worst - (worst - best) * quality / 100.
    return best + ((worst - best) * (100 - quality) + 50) // 100


def _check_container(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in _CONTAINER_CODECS:
        raise ValueError(f"unsupported video file extension {path.suffix!r} in {str(path)!r}; "
                         f"supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    return ext


def _check_codec(ext: str, codec: object) -> str:
    allowed = _CONTAINER_CODECS[ext]
    if codec is None:
        return allowed[0]
    if not isinstance(codec, str):
        raise TypeError(f"codec must be a string, got {codec!r}")
    name = codec.lower()
    if name not in allowed:
        raise ValueError(f"codec {codec!r} cannot be written to a {ext} file; "
                         f"{ext} supports: {', '.join(allowed)}")
    return name


def _check_convert(convert: object) -> Convert | None:
    if convert is None or convert == "clip":
        return convert
    raise ValueError(f"convert must be None or 'clip', got {convert!r}")


def _to_uint8(frame: np.ndarray, convert: Convert | None, index: int) -> np.ndarray:
    """Validate the dtype of one frame (H, W, 3) and return it as uint8."""
    if frame.dtype == np.uint8:
        return frame
    if np.issubdtype(frame.dtype, np.floating):
        if convert is None:
            raise ValueError(f"frames must be uint8, got {frame.dtype}; pass convert='clip' to "
                             "store float frames in [0, 1] (scaled by 255, rounded, clipped)")
        if np.isnan(frame).any():
            raise ValueError(f"frame {index} contains NaN; cannot convert it to uint8")
        return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"frames must be uint8 (or float with convert='clip'), got {frame.dtype}")


def _even_size(width: int, height: int, pad: bool) -> tuple[int, int]:
    if width % 2 == 0 and height % 2 == 0:
        return width, height
    even = (width + width % 2, height + height % 2)
    if not pad:
        raise ValueError(
            f"width and height must be even for yuv420p video, got {width}x{height}; pass "
            f"pad=True to replicate the last column/row ({even[0]}x{even[1]}), or crop the frames")
    return even


# --------------------------------------------------------------------------- writer


@dataclasses.dataclass(frozen=True)
class _Plan:
    ext: str
    codec: str
    fps: Fraction
    quality: int | None
    pad: bool
    convert: Convert | None


def _plan(path: Path, *, fps: object, codec: object, quality: object, pad: object,
          convert: object, webm_only: bool) -> _Plan:
    ext = _check_container(path)
    if webm_only and ext != ".webm":
        raise ValueError(f"a WebM file must end in .webm, got {str(path)!r}; "
                         "use save_video() for .mp4 or .gif")
    name = _check_codec(ext, codec)
    rate = check_fps(fps)
    if ext == ".gif":
        if quality is not None:
            raise ValueError(f"quality does not apply to .gif (got {quality!r}); pass quality=None")
        if rate > _GIF_MAX_FPS:
            raise ValueError(f"GIF cannot play {fps!r} fps: delays are whole centiseconds and "
                             "browsers slow delays below 2 cs down; "
                             f"use at most {_GIF_MAX_FPS} fps")
        q = None
    else:
        q = DEFAULT_QUALITY if quality is None else _check_quality(quality)
    if not isinstance(pad, bool):
        raise TypeError(f"pad must be True or False, got {pad!r}")
    return _Plan(ext, name, rate, q, pad, _check_convert(convert))


def _codec_args(plan: _Plan, exe: str) -> list[str]:
    """ffmpeg output arguments for the encoder and pixel format of ``plan``."""
    # VP8 streams are BT.601 by definition (decoders ignore container tags); the others
    # are tagged BT.709. The conversion is explicit because ffmpeg before 7.1 ignores the
    # output tags when it converts on its own.
    matrix = "bt601" if plan.codec == "vp8" else "bt709"
    tags = ["-colorspace", "bt470bg" if plan.codec == "vp8" else "bt709",
            "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
    to_yuv = ["-vf", f"scale=out_color_matrix={matrix}:out_range=tv,format=yuv420p"]
    encoders = _encoders(exe)
    q = plan.quality if plan.quality is not None else DEFAULT_QUALITY
    if plan.codec == "vp9":
        if "libvpx-vp9" not in encoders:
            raise EncodeError(f"this ffmpeg ({exe}) has no libvpx-vp9 encoder")
        return [*to_yuv, "-c:v", "libvpx-vp9", "-crf", str(_crf("vp9", q)), "-b:v", "0",
                "-row-mt", "1", "-threads", str(_threads()), "-deadline", "good",
                "-cpu-used", str(_VP9_SPEED), *tags]
    if plan.codec == "vp8":
        if "libvpx" not in encoders:
            raise EncodeError(f"this ffmpeg ({exe}) has no libvpx (VP8) encoder")
        # VP8 has no pure constant-quality mode; -b:v 0 would mean "256 kbit/s".
        # One thread: libvpx's VP8 threads spin-wait on each other, which took 9x longer
        # (18.7 s instead of 2.1 s) when the two cores were shared with other work.
        return [*to_yuv, "-c:v", "libvpx", "-crf", str(_crf("vp8", q)), "-b:v", "100M",
                "-threads", "1", "-deadline", "good", "-cpu-used", str(_VP8_SPEED), *tags]
    if plan.codec == "h264":
        common = [*tags, "-movflags", "+faststart"]
        if "libx264" in encoders:
            return [*to_yuv, "-c:v", "libx264", "-crf", str(_crf("h264", q)),
                    "-preset", "medium", *common]
        if "libopenh264" in encoders:
            qp = str(_crf("h264", q))
            return [*to_yuv, "-c:v", "libopenh264", "-rc_mode", "quality", "-qmin", qp,
                    "-qmax", qp, *common]
        raise EncodeError(f"this ffmpeg ({exe}) has neither libx264 nor libopenh264 for .mp4")
    if plan.codec == "gif":
        return ["-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-c:v", "gif"]
    raise AssertionError(plan.codec)  # pragma: no cover - _check_codec prevents it


class _StderrReader(threading.Thread):
    """Drains ffmpeg's stderr so the pipe never fills up, keeping the last bytes."""

    def __init__(self, stream: Any) -> None:
        super().__init__(name="wanpy-ffmpeg-stderr", daemon=True)
        self._stream = stream
        self._data = bytearray()

    def run(self) -> None:
        while True:
            chunk = self._stream.read1(8192)
            if not chunk:
                break
            self._data += chunk
            if len(self._data) > 2 * _STDERR_KEEP:
                del self._data[:-_STDERR_KEEP]

    def text(self) -> str:
        return bytes(self._data[-_STDERR_KEEP:]).decode("utf-8", "replace").strip()


class VideoWriter:
    """Stream frames into a .webm, .mp4 or .gif file; the file appears only when complete.

    Use it as a context manager::

        with VideoWriter("clip.mp4", fps=16) as w:
            w.write(first_clip)      # (T, H, W, 3) uint8
            w.write(next_clip)       # appended; must have the same H and W
            w.write(one_frame)       # (H, W, 3)

    Leaving the block normally finishes the encode and renames the temporary file to
    ``path``; leaving it with an exception aborts and removes everything. ``codec``,
    ``quality``, ``pad`` and ``convert`` are as in :func:`save_video`. A writer is not
    thread-safe.

    Raises ``FileNotFoundError`` if the directory of ``path`` does not exist and
    ``PermissionError`` if it cannot be written, both before anything is encoded.
    """

    _webm_only = False

    def __init__(self, path: str | os.PathLike[str], *, fps: FpsLike, codec: str | None = None,
                 quality: int | None = None, pad: bool = False,
                 convert: Convert | None = None) -> None:
        self._path = Path(os.path.abspath(os.fspath(path)))
        self._plan = _plan(self._path, fps=fps, codec=codec, quality=quality, pad=pad,
                           convert=convert, webm_only=self._webm_only)
        self._exe = _ffmpeg_exe()
        self._args = _codec_args(self._plan, self._exe)  # fail on a missing encoder now
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: _StderrReader | None = None
        self._shape: tuple[int, int] | None = None  # (height, width) as given
        self._count = 0
        self._started = time.perf_counter()
        self._tmp = self._create_temp()
        self._state = "open"  # -> "closed" | "aborted"; set last: __del__ relies on it

    # -- public ------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The file this writer produces (absolute)."""
        return self._path

    @property
    def frames_written(self) -> int:
        """Frames handed to the encoder so far."""
        return self._count

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def write(self, frames: np.ndarray) -> None:
        """Append one frame (H, W, 3) or a batch (T, H, W, 3).

        Every frame must have the height and width of the first one written. A batch is
        validated as a whole before any of it is written, except for NaN checks of
        float frames, which happen frame by frame.
        """
        self._check_open()
        arr = np.asarray(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError("write() takes one frame (H, W, 3) or a batch (T, H, W, 3) of RGB "
                             f"frames, got shape {arr.shape}")
        self._check_dtype(arr.dtype)
        self._check_shape(arr.shape[1:3])
        for frame in arr:
            self._write_frame(frame)

    def close(self) -> None:
        """Finish the encode and move the file into place.

        Calling it again, or after :meth:`abort`, does nothing. Raises ``ValueError`` if
        no frame was written and ``EncodeError`` if ffmpeg failed; in both cases nothing
        is left on disk.
        """
        if self._state != "open":
            return
        if self._count == 0:
            self.abort()
            raise ValueError(f"no frames were written; {self._path} was not created")
        assert self._proc is not None and self._proc.stdin is not None
        with contextlib.suppress(OSError):  # ffmpeg already exited; its status says why
            self._proc.stdin.close()
        try:
            returncode = self._proc.wait()
        except BaseException:
            self.abort()
            raise
        self._join_stderr()
        if returncode != 0:
            self._fail(f"ffmpeg exited with status {returncode}")
        try:
            fd = os.open(self._tmp, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self._path)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        self._fsync_dir()
        message = self._stderr.text() if self._stderr is not None else ""
        if message:
            logger.warning("ffmpeg reported while writing %s: %s", self._path, message)
        logger.info("wrote %s: %d frames at %s fps, %d bytes in %.1f s", self._path, self._count,
                    self._plan.fps, self._path.stat().st_size, time.perf_counter() - self._started)

    def abort(self) -> None:
        """Stop the encoder and remove the temporary file; the target is not touched."""
        if self._state != "open":
            return
        self._state = "aborted"
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # a broken pipe to a killed process
                    proc.stdin.close()
            proc.wait()
        self._join_stderr()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)
        logger.debug("aborted writing %s after %d frames", self._path, self._count)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if getattr(self, "_state", None) == "open":
            logger.warning("%s for %s was never closed; removing the unfinished file",
                           type(self).__name__, getattr(self, "_path", "?"))
            self.abort()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self._path)!r}, fps={self._plan.fps}, "
                f"codec={self._plan.codec!r}, frames_written={self._count}, state={self._state})")

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"{type(self).__name__} for {self._path} is {self._state}")

    def _check_dtype(self, dtype: np.dtype[Any]) -> None:
        if dtype == np.uint8:
            return
        if np.issubdtype(dtype, np.floating):
            if self._plan.convert is None:
                raise ValueError(f"frames must be uint8, got {dtype}; pass convert='clip' to store "
                                 "float frames in [0, 1] (scaled by 255, rounded, clipped)")
            return
        raise ValueError(f"frames must be uint8 (or float with convert='clip'), got {dtype}")

    def _check_shape(self, hw: tuple[int, ...]) -> None:
        height, width = int(hw[0]), int(hw[1])
        if self._shape is None:
            if height < 1 or width < 1:
                raise ValueError(f"frames must be at least 1x1, got {width}x{height}")
            if self._plan.ext != ".gif":
                _even_size(width, height, self._plan.pad)
            self._shape = (height, width)
        elif (height, width) != self._shape:
            raise ValueError(f"every frame must have the size of the first one "
                             f"({self._shape[1]}x{self._shape[0]}), got {width}x{height} "
                             f"at frame {self._count}")

    def _create_temp(self) -> Path:
        parent = self._path.parent
        _check_directory(self._path)
        tmp = parent / f".{self._path.name}.{secrets.token_hex(4)}.part"
        try:
            # Mode 0o666 so the umask applies, as for any new file (mkstemp would give 0o600).
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except PermissionError as exc:
            raise PermissionError(errno.EACCES, "cannot create a file in the output directory",
                                  str(parent)) from exc
        return tmp

    def _start(self, height: int, width: int) -> None:
        cmd = [
            self._exe, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", f"{self._plan.fps.numerator}/{self._plan.fps.denominator}",
            "-i", "pipe:0", "-an", *self._args,
            "-f", _MUXERS[self._plan.ext], "-y", _ffmpeg_path_arg(self._tmp),
        ]
        logger.debug("starting ffmpeg: %s", subprocess.list2cmdline(cmd))
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, **_POPEN_GROUP)
        self._stderr = _StderrReader(self._proc.stderr)
        self._stderr.start()

    def _write_frame(self, frame: np.ndarray) -> None:
        frame = _to_uint8(frame, self._plan.convert, self._count)
        height, width = frame.shape[:2]
        if self._plan.ext != ".gif":
            even_w, even_h = _even_size(width, height, self._plan.pad)
            if (even_w, even_h) != (width, height):
                frame = np.pad(frame, ((0, even_h - height), (0, even_w - width), (0, 0)),
                               mode="edge")
        frame = np.ascontiguousarray(frame)
        if self._proc is None:
            self._start(*frame.shape[:2])
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(frame.reshape(-1).data)  # a view: no copy
        except OSError as exc:  # BrokenPipeError: ffmpeg exited; its stderr says why
            try:
                self._proc.wait(timeout=10)
                self._join_stderr()  # all of ffmpeg's last words
            except subprocess.TimeoutExpired:
                pass  # _fail -> abort() kills it
            self._fail(f"ffmpeg stopped reading frames at frame {self._count} ({exc})")
        self._count += 1

    def _join_stderr(self) -> None:
        if self._stderr is not None and self._stderr.is_alive():
            self._stderr.join()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()

    def _fail(self, what: str) -> None:
        message = self._stderr.text() if self._stderr is not None else ""
        self.abort()
        detail = f":\n{message}" if message else ""
        raise EncodeError(f"could not write {self._path}: {what}{detail}", path=str(self._path),
                          ffmpeg_message=message)

    def _fsync_dir(self) -> None:
        if sys.platform == "win32":  # pragma: no cover - directories cannot be opened there
            return
        try:
            fd = os.open(self._path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # some filesystems refuse fsync on directories; the rename is done anyway
        finally:
            os.close(fd)


class WebMWriter(VideoWriter):
    """Stream frames into a WebM file (VP9 by default, or VP8).

    ``with WebMWriter(path, fps=16) as w: w.write(frames)``; see :class:`VideoWriter`
    for the behaviour and :func:`write_webm` for the arguments. ``path`` must end in
    ``.webm``.
    """

    _webm_only = True

    def __init__(self, path: str | os.PathLike[str], *, fps: FpsLike, codec: str = "vp9",
                 quality: int = DEFAULT_QUALITY, pad: bool = False,
                 convert: Convert | None = None) -> None:
        super().__init__(path, fps=fps, codec=codec, quality=quality, pad=pad, convert=convert)

    def __enter__(self) -> WebMWriter:
        return self


def _write_all(writer: VideoWriter, frames: np.ndarray | Iterable[np.ndarray]) -> Path:
    """Feed ``frames`` (a (T, H, W, 3) array or an iterable of frames) to ``writer``."""
    try:
        if isinstance(frames, np.ndarray):
            writer.write(frames)
        else:
            iterator = iter(frames)
            while True:
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                except Exception as exc:
                    raise EncodeError(
                        f"the frame source raised {type(exc).__name__}: {exc} after "
                        f"{writer.frames_written} frames; {writer.path} was not written",
                        path=str(writer.path)) from exc
                arr = np.asarray(frame)
                if arr.ndim != 3:
                    raise ValueError("each frame must have shape (H, W, 3), got shape "
                                     f"{arr.shape} at frame {writer.frames_written}")
                writer.write(arr)
        if writer.frames_written == 0:
            raise ValueError(f"frames is empty; {writer.path} was not written")
        writer.close()
        return writer.path
    except BaseException:
        writer.abort()
        raise


def _check_frames_arg(frames: object) -> None:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            hint = "; wrap a single frame as frames[None]" if frames.ndim == 3 else ""
            raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}{hint}")
        if frames.shape[0] == 0:
            raise ValueError(f"frames is empty (shape {frames.shape})")
    elif isinstance(frames, (str, bytes)) or not isinstance(frames, Iterable):
        raise TypeError(f"frames must be a (T, H, W, 3) array or an iterable of (H, W, 3) "
                        f"frames, got {type(frames).__name__}")


def write_webm(path: str | os.PathLike[str], frames: np.ndarray | Iterable[np.ndarray], *,
               fps: FpsLike, codec: str = "vp9", quality: int = DEFAULT_QUALITY,
               pad: bool = False, convert: Convert | None = None) -> Path:
    """Encode ``frames`` to a WebM file at ``path`` and return its absolute path.

    Args:
        path: Target file; must end in ``.webm``. Its directory must exist. An existing
            file is replaced, atomically, only if the encode succeeds.
        frames: uint8 RGB frames: an array (T, H, W, 3), or an iterable of (H, W, 3)
            arrays, which is consumed lazily (frames are streamed to the encoder).
        fps: Frame rate, stored exactly: an int, a fractions.Fraction (e.g.
            ``Fraction(30000, 1001)``) or a float, taken as its shortest decimal
            (12.5 -> 25/2). Must be positive and finite.
        codec: ``"vp9"`` (default) or ``"vp8"``.
        quality: 0-100, higher is better; see the module docs for the crf mapping.
        pad: Replicate the last column/row to make an odd width/height even. Without
            it, odd sizes raise ``ValueError``.
        convert: ``"clip"`` accepts float frames holding values in [0, 1]: they are
            scaled by 255, rounded and clipped to 0-255. NaN raises ``ValueError``.
            Without it, non-uint8 frames raise ``ValueError``.

    Raises:
        ValueError: a bad argument or frame (dtype, shape, size, empty input).
        FileNotFoundError: the target directory does not exist.
        PermissionError: the target directory is not writable.
        wanpy.errors.EncodeError: ffmpeg failed (``ffmpeg_message`` holds its stderr) or
            the frame iterator raised (chained as ``__cause__``). Nothing is left on disk.
        KeyboardInterrupt: re-raised after ffmpeg is stopped and the files removed.
    """
    _check_frames_arg(frames)
    writer = WebMWriter(path, fps=fps, codec=codec, quality=quality, pad=pad, convert=convert)
    return _write_all(writer, frames)


def save_video(path: str | os.PathLike[str], frames: np.ndarray | Iterable[np.ndarray], *,
               fps: FpsLike, codec: str | None = None, quality: int | None = None,
               pad: bool = False, convert: Convert | None = None) -> Path:
    """Encode ``frames`` to ``path``, choosing the format from its extension.

    ==========  ======================  ==========================================
    extension   codecs (default first)  notes
    ==========  ======================  ==========================================
    ``.webm``   vp9, vp8                constant quality, yuv420p
    ``.mp4``    h264                    libx264 (or libopenh264), yuv420p,
                                        ``-movflags +faststart``
    ``.gif``    gif                     one palette for the whole clip; no quality;
                                        delays in centiseconds, fps <= 50
    ==========  ======================  ==========================================

    ``quality=None`` means :data:`DEFAULT_QUALITY` for .webm and .mp4 and must stay None
    for .gif. The other arguments, the errors and the atomic-write guarantee are those of
    :func:`write_webm`. An unknown extension, or a codec the container does not take,
    raises ``ValueError``.
    """
    _check_frames_arg(frames)
    writer = VideoWriter(path, fps=fps, codec=codec, quality=quality, pad=pad, convert=convert)
    return _write_all(writer, frames)


def check_output(path: str | os.PathLike[str], *, fps: FpsLike | None = None, codec: str | None = None,
                 quality: int | None = None) -> Path:
    """Check that :func:`save_video` could write ``path``, without writing it.

    Run it before a long generation whose result goes to ``path``: the extension, codec,
    quality, fps (when given) and encoder are checked as the writer checks them, and a
    temporary file is created in the target directory and removed again, so a missing
    or unwritable directory fails now (``FileNotFoundError``, ``PermissionError``), not
    after the frames exist. Returns the absolute path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"output must be a path, got {type(path).__name__}")
    if "\x00" in os.fspath(path):
        raise ValueError(f"output: the path contains a NUL character: {os.fspath(path)!r}")
    target = Path(os.path.abspath(os.fspath(path)))
    ext = _check_container(target)
    name = _check_codec(ext, codec)
    if ext == ".gif":
        if quality is not None:
            raise ValueError(f"quality does not apply to .gif (got {quality!r}); pass quality=None")
    elif quality is not None:
        _check_quality(quality)
    if fps is not None:
        _plan(target, fps=fps, codec=name, quality=quality, pad=False, convert=None, webm_only=False)
    exe = _ffmpeg_exe()
    _codec_args(_Plan(ext, name, Fraction(1), None if ext == ".gif" else DEFAULT_QUALITY, False, None), exe)
    _probe_directory(target)
    return target


def _check_directory(target: Path) -> None:
    parent = target.parent
    if not parent.exists():
        raise FileNotFoundError(errno.ENOENT, "output directory does not exist (create it first)", str(parent))
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "the output's parent is not a directory", str(parent))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "output path is a directory", str(target))


def _probe_directory(target: Path) -> None:
    _check_directory(target)
    parent = target.parent
    probe = parent / f".{target.name}.{secrets.token_hex(4)}.probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except PermissionError as exc:
        raise PermissionError(errno.EACCES, "cannot create a file in the output directory", str(parent)) from exc
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create a file in the output directory ({exc.strerror})",
                      str(parent)) from exc
    os.unlink(probe)


# --------------------------------------------------------------------------- probe


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

    def __str__(self) -> str:
        if self.fps.denominator == 1:
            rate = f"{self.fps.numerator} fps"
        else:
            rate = f"{self.fps} fps (~{float(self.fps):.3f})"
        return (f"{self.path.name}: {self.frame_count} frames, {self.width}x{self.height}, "
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


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe the first video stream of ``path``, decoding every frame to count them.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` (with
    ffmpeg's message) if it is not a readable video.
    """
    p = Path(os.path.abspath(os.fspath(path)))
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "no such video file", str(p))
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a video file", str(p))
    cmd = [_ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "verbose",
           "-i", _ffmpeg_path_arg(p), "-map", "0:v:0", "-f", "null", "-"]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, check=False)
    log = result.stderr.decode("utf-8", "replace")
    head = re.split(r"\nOutput #0|\nStream mapping:", log, maxsplit=1)[0]
    video = _RE_VIDEO.search(head)
    if result.returncode != 0 or video is None:
        lines = [line.strip() for line in log.splitlines()
                 if line.strip() and not line.startswith("Exiting with exit code")]
        errors = [line for line in lines if "rror" in line or not line.startswith("[")]
        message = "\n".join(errors[-4:]) or f"ffmpeg exited with status {result.returncode}"
        reason = "has no video stream" if result.returncode == 0 else "is not a readable video"
        raise ValueError(f"{p} {reason}: {message}")

    graph = _RE_GRAPH.search(log)
    decoded = _RE_DECODED.search(log)
    if decoded is not None:
        frame_count = int(decoded.group(1))
        if decoded.group(2) and int(decoded.group(2)):
            logger.warning("%s: ffmpeg reported %s decode errors", p, decoded.group(2))
    else:  # older ffmpeg: the final progress line
        counts = re.findall(r"frame=\s*(\d+)", log)
        if not counts:
            raise ValueError(f"{p}: could not read ffmpeg's frame count")
        frame_count = int(counts[-1])

    fps: Fraction | None = None
    if graph is not None:
        width, height = int(graph.group(1)), int(graph.group(2))
        num, den = int(graph.group(3)), int(graph.group(4))
        if num > 0 and den > 0:
            fps = Fraction(num, den)
    else:
        size = re.search(r", (\d+)x(\d+)[ ,\[]", video.group(2))
        if size is None:
            raise ValueError(f"{p}: could not read the frame size from ffmpeg's output")
        width, height = int(size.group(1)), int(size.group(2))
    if fps is None:
        fps = _parse_fps_text(video.group(2))
    if fps is None:
        raise ValueError(f"{p}: ffmpeg reports no frame rate for the video stream")

    container_duration = None
    dur = _RE_DURATION.search(head)
    if dur is not None:
        container_duration = (int(dur.group(1)) * 3600 + int(dur.group(2)) * 60
                              + float(dur.group(3)))
    return VideoInfo(path=p, frame_count=frame_count, fps=fps, width=width, height=height,
                     codec=video.group(1), duration=float(frame_count / fps),
                     container_duration=container_duration)
