"""Write frames to WebM (VP9/VP8), MP4 (H.264) or GIF: :func:`save_video` and :class:`VideoWriter`.

Encoding runs in the ffmpeg executable that ships with ``imageio-ffmpeg``; frames are
streamed to it through a pipe one at a time, so a (T, H, W, 3) array is never copied as
a whole. Unlike stable-diffusion.cpp's own writer, which stores every frame as an
independent WebP key frame, WebM is written with VP9 (or VP8) inter-frame compression in
constant-quality mode. What each container takes (codecs, quality, frame rates) is
documented in :mod:`wanpy.formats`.

Every write is atomic: ffmpeg writes a hidden temporary file in the target directory,
which is flushed to disk and renamed over the target only when the encode succeeded. A
failed or interrupted encode leaves neither the temporary file nor a partial target
behind (an existing file at the target path is left untouched). The temporary name is
shortened when needed, so any target name the filesystem accepts can be written.

yuv420p (WebM, MP4) needs an even width and height: odd sizes raise ``ValueError``
unless ``pad=True``, which replicates the last column and/or row (63x47 is stored as
64x48). Frames are never cropped or resized. GIF has no such constraint.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from wanpy.errors import EncodeError
from wanpy.formats import (
    DEFAULT_QUALITY,
    MUXERS,
    SUPPORTED_EXTENSIONS,
    Convert,
    FpsLike,
    Plan,
    check_codec,
    check_container,
    check_quality_for,
    check_rate,
    codec_args,
    make_plan,
    metadata_args,
)
from wanpy.paths import check_output_path, printable, temp_path_for
from wanpy.probe import ffmpeg_exe, ffmpeg_path_arg

__all__ = ["DEFAULT_QUALITY", "SUPPORTED_EXTENSIONS", "VideoWriter", "check_output", "save_video"]

logger = logging.getLogger("wanpy")

_STDERR_KEEP = 64 * 1024

_POPEN_GROUP: dict[str, Any]
if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    _POPEN_GROUP = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    # Own session: Ctrl-C reaches Python only, which then stops ffmpeg and cleans up,
    # instead of ffmpeg finalizing a half-written file on its own.
    _POPEN_GROUP = {"start_new_session": True}


def _to_uint8(frame: np.ndarray, convert: Convert | None, index: int) -> np.ndarray:
    """Validate the dtype of one frame (H, W, 3) and return it as uint8."""
    if frame.dtype == np.uint8:
        return frame
    if np.issubdtype(frame.dtype, np.floating):
        if convert is None:
            raise ValueError(f"frames must be uint8, got {frame.dtype}; pass convert='clip' to "
                             "store float frames in [0, 1] (scaled by 255, rounded, clipped)")
        if np.isnan(frame).any():
            raise ValueError(f"frames: frame {index} contains NaN; cannot convert it to uint8")
        return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"frames must be uint8 (or float with convert='clip'), got {frame.dtype}")


def _even_size(width: int, height: int, pad: bool) -> tuple[int, int]:
    if width % 2 == 0 and height % 2 == 0:
        return width, height
    even = (width + width % 2, height + height % 2)
    if not pad:
        raise ValueError(
            f"frames: width and height must be even for yuv420p video, got {width}x{height}; pass "
            f"pad=True to replicate the last column/row ({even[0]}x{even[1]}), or crop the frames")
    return even


def _create_in(name: str, target: Path, suffix: str, mode: int) -> Path:
    """Create a new empty hidden file next to ``target``: proof that the directory takes files."""
    tmp = Path(temp_path_for(name, target, suffix))
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    except PermissionError as exc:
        raise PermissionError(errno.EACCES, f"{name}: cannot create a file in the output directory",
                              str(target.parent)) from exc
    except OSError as exc:
        raise OSError(exc.errno, f"{name}: cannot create a file in the output directory ({exc.strerror})",
                      str(target.parent)) from exc
    return tmp


class _StderrReader(threading.Thread):
    """Drains ffmpeg's stderr so the pipe never fills up, keeping the last bytes."""

    def __init__(self, stream: Any) -> None:
        super().__init__(name="wanpy-ffmpeg-stderr", daemon=True)
        self._stream = stream
        self._data = bytearray()

    def run(self) -> None:
        while chunk := self._stream.read1(8192):
            self._data += chunk
            if len(self._data) > 2 * _STDERR_KEEP:
                del self._data[:-_STDERR_KEEP]

    def text(self) -> str:
        return bytes(self._data[-_STDERR_KEEP:]).decode("utf-8", "replace").strip()


# --------------------------------------------------------------------------- the writer


class VideoWriter:
    """Stream frames into a .webm, .mp4 or .gif file; the file appears only when complete.

    Use it as a context manager::

        with VideoWriter("clip.mp4", fps=16) as w:
            w.write(first_clip)      # (T, H, W, 3) uint8
            w.write(next_clip)       # appended; must have the same H and W
            w.write(one_frame)       # (H, W, 3)

    Leaving the block normally finishes the encode and renames the temporary file to
    ``path``; leaving it with an exception aborts and removes everything. The arguments
    are those of :func:`save_video`, and so are the errors raised before anything is
    encoded (a missing or unwritable directory included). A writer is not thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str], *, fps: FpsLike, codec: str | None = None,
                 quality: int | None = None, pad: bool = False, convert: Convert | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        self._path = Path(check_output_path("path", path))
        self._plan = make_plan("path", self._path, fps=fps, codec=codec, quality=quality, pad=pad, convert=convert)
        self._exe = ffmpeg_exe()
        self._args = codec_args(self._plan, self._exe)  # fail on a missing encoder now
        self._args += metadata_args(self._plan.ext, metadata)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: _StderrReader | None = None
        self._shape: tuple[int, int] | None = None  # (height, width) as given
        self._count = 0
        self._started = time.perf_counter()
        # Mode 0o666 so the umask applies, as for any new file (mkstemp would give 0o600).
        self._tmp = _create_in("path", self._path, ".part", 0o666)
        self._state = "open"  # -> "closed" | "aborted"; set last: __del__ relies on it

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
            raise ValueError("frames: write() takes one frame (H, W, 3) or a batch (T, H, W, 3) of RGB "
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
            raise ValueError(f"no frames were written; {printable(self._path)} was not created")
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
            logger.warning("ffmpeg reported while writing %s: %s", printable(self._path), message)
        logger.info("wrote %s: %d frames at %s fps, %d bytes in %.1f s", printable(self._path), self._count,
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
        logger.debug("aborted writing %s after %d frames", printable(self._path), self._count)

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
                           type(self).__name__, printable(getattr(self, "_path", "?")))
            self.abort()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({printable(self._path)!r}, fps={self._plan.fps}, "
                f"codec={self._plan.codec!r}, frames_written={self._count}, state={self._state})")

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"{type(self).__name__} for {printable(self._path)} is {self._state}")

    def _check_dtype(self, dtype: np.dtype[Any]) -> None:
        if dtype == np.uint8 or (np.issubdtype(dtype, np.floating) and self._plan.convert is not None):
            return
        if np.issubdtype(dtype, np.floating):
            raise ValueError(f"frames must be uint8, got {dtype}; pass convert='clip' to store "
                             "float frames in [0, 1] (scaled by 255, rounded, clipped)")
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
            raise ValueError(f"frames: every frame must have the size of the first one "
                             f"({self._shape[1]}x{self._shape[0]}), got {width}x{height} at frame {self._count}")

    def _start(self, height: int, width: int) -> None:
        rate = f"{self._plan.fps.numerator}/{self._plan.fps.denominator}"
        # -r on the output too: without it ffmpeg re-guesses the rate (123457/1000 became 120).
        cmd = [self._exe, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate,
               "-i", "pipe:0", "-an", "-r", rate, *self._args,
               "-f", MUXERS[self._plan.ext], "-y", ffmpeg_path_arg(self._tmp)]
        logger.debug("starting ffmpeg: %s", printable(subprocess.list2cmdline(cmd)))
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
                frame = np.pad(frame, ((0, even_h - height), (0, even_w - width), (0, 0)), mode="edge")
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
        raise EncodeError(f"could not write {printable(self._path)}: {what}{detail}", path=str(self._path),
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


# --------------------------------------------------------------------------- one call


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
                        f"the frame source raised {type(exc).__name__}: {exc} after {writer.frames_written} "
                        f"frames; {printable(writer.path)} was not written", path=str(writer.path)) from exc
                arr = np.asarray(frame)
                if arr.ndim != 3:
                    raise ValueError("frames: each frame must have shape (H, W, 3), got shape "
                                     f"{arr.shape} at frame {writer.frames_written}")
                writer.write(arr)
        if writer.frames_written == 0:
            raise ValueError(f"frames is empty; {printable(writer.path)} was not written")
        writer.close()
        return writer.path
    except BaseException:
        writer.abort()
        raise


def save_video(path: str | os.PathLike[str], frames: np.ndarray | Iterable[np.ndarray], *,
               fps: FpsLike, codec: str | None = None, quality: int | None = None,
               pad: bool = False, convert: Convert | None = None, metadata: Mapping[str, str] | None = None) -> Path:
    """Encode ``frames`` to ``path``, choosing the format from its extension; returns its absolute path.

    ==========  ======================  ==========================================
    extension   codecs (default first)  notes
    ==========  ======================  ==========================================
    ``.webm``   vp9, vp8                constant quality, yuv420p, fps <= 1000
    ``.mp4``    h264                    libx264 (or libopenh264), yuv420p,
                                        ``-movflags +faststart``
    ``.gif``    gif                     one palette for the whole clip; no quality;
                                        delays in centiseconds, fps <= 50
    ==========  ======================  ==========================================

    Args:
        path: Target file (str or os.PathLike[str]); its directory must exist. An existing
            file is replaced, atomically, only if the encode succeeds.
        frames: uint8 RGB frames: an array (T, H, W, 3), or an iterable of (H, W, 3)
            arrays, which is consumed lazily (frames are streamed to the encoder).
        fps: Frame rate, stored exactly: an int, a fractions.Fraction (e.g.
            ``Fraction(30000, 1001)``) or a float, taken as its shortest decimal
            (12.5 -> 25/2). A rate the container would change is refused (module docs).
        codec: The container's codec (case-insensitive); None picks the default.
        quality: 0-100, higher is better (module docs); None means :data:`DEFAULT_QUALITY`
            for .webm and .mp4 and must stay None for .gif.
        pad: Replicate the last column/row to make an odd width/height even. Without
            it, odd sizes raise ``ValueError`` (WebM and MP4).
        convert: ``"clip"`` accepts float frames holding values in [0, 1]: they are
            scaled by 255, rounded and clipped to 0-255. NaN raises ``ValueError``.
        metadata: container tags (key -> text) for .webm and .mp4, read back by
            ``wanpy.probe_video`` (``VideoInfo.metadata``); GIF stores none.

    Raises:
        TypeError, ValueError: a bad argument or frame (named in the message).
        FileNotFoundError, PermissionError: the target directory is missing or unwritable.
        wanpy.errors.EncodeError: ffmpeg failed (``ffmpeg_message`` holds its stderr) or
            the frame iterator raised (chained as ``__cause__``). Nothing is left on disk.
        KeyboardInterrupt: re-raised after ffmpeg is stopped and the files removed.
    """
    _check_frames_arg(frames)
    writer = VideoWriter(path, fps=fps, codec=codec, quality=quality, pad=pad, convert=convert, metadata=metadata)
    return _write_all(writer, frames)


def check_output(path: str | os.PathLike[str], *, fps: FpsLike | None = None, codec: str | None = None,
                 quality: int | None = None, name: str = "output") -> Path:
    """Check that :func:`save_video` could write ``path``, without writing it.

    Run it before a long generation whose result goes to ``path``: the path, extension,
    codec, quality, fps (when given) and encoder are checked as the writer checks them,
    and a temporary file is created in the target directory and removed again, so a
    missing or unwritable directory fails now (``FileNotFoundError``,
    ``PermissionError``), not after the frames exist. ``name`` is the argument named in
    the messages. Returns the absolute path.
    """
    target = Path(check_output_path(name, path))
    ext = check_container(name, target)
    plan = Plan(ext, check_codec(ext, codec), Fraction(1) if fps is None else check_rate(ext, fps),
                 check_quality_for(ext, quality), False, None)
    codec_args(plan, ffmpeg_exe())
    os.unlink(_create_in(name, target, ".probe", 0o600))
    return target
