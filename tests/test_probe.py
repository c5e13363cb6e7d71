"""wanpy.probe: frame count, exact rate and size of a video file, and what it refuses to open."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from wanpy.encode import save_video
from wanpy.probe import VideoInfo, probe_video

from wanpy.testing.scenes import scene_frame

FPS = 16
W, H = 64, 48


def scene(n: int, height: int = H, width: int = W) -> np.ndarray:
    return np.stack([scene_frame(t, height, width, n=max(n, 2)) for t in range(n)])


# ---------------------------------------------------------------- files that are videos


def test_probe_counts_decoded_frames(tmp_path: Path) -> None:
    # A truncated file: the container still declares 161 frames' worth of duration,
    # but only the frames that decode are counted.
    out = save_video(tmp_path / "t.webm", scene(161), fps=FPS, codec="vp8")
    data = out.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) // 2])
    info = probe_video(cut)
    assert 0 < info.frame_count < 161
    assert info.duration == info.frame_count / 16


def test_video_info_is_frozen(tmp_path: Path) -> None:
    info = probe_video(save_video(tmp_path / "i.webm", scene(2), fps=FPS))
    assert isinstance(info, VideoInfo)
    with pytest.raises(AttributeError):
        info.frame_count = 3  # type: ignore[misc]


def test_probe_through_a_symlink_reports_the_name_given(tmp_path: Path) -> None:
    out = save_video(tmp_path / "real.webm", scene(3), fps=FPS)
    (tmp_path / "alias.webm").symlink_to(out)
    info = probe_video(tmp_path / "alias.webm")
    assert (info.path, info.frame_count) == (tmp_path / "alias.webm", 3)


def test_probe_non_utf8_name_prints(tmp_path: Path) -> None:
    name = os.fsdecode(b"clip\xff.webm")
    out = save_video(tmp_path / name, scene(4), fps=FPS)
    assert out.name == name
    info = probe_video(out)
    assert info.frame_count == 4
    assert str(info).startswith("clip\\xff.webm: 4 frames")
    str(info).encode("utf-8")  # printable on any stream


def test_probe_non_utf8_name_prints_on_a_strict_utf8_stream(tmp_path: Path) -> None:
    # `wanpy probe` prints the result; a surrogate escape on a strict UTF-8 stdout would crash print()
    out = save_video(tmp_path / os.fsdecode(b"v\xfe.webm"), scene(2), fps=FPS)
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    print(probe_video(out), file=stream)
    stream.flush()
    assert raw.getvalue().decode("utf-8").startswith("v\\xfe.webm: 2 frames")


# ---------------------------------------------------------------- paths that are not videos


def test_probe_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "missing.webm")


def test_probe_not_a_video(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.webm"
    bogus.write_text("not a video")
    with pytest.raises(ValueError, match="(?s)is not a readable video: .*Invalid data"):
        probe_video(bogus)


def _within_20_s(call: Callable[[], object], fifo: Path) -> None:
    """Run ``call``; fail, not hang, if it blocks (a reader blocked on ``fifo`` is released)."""
    box: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("probe_video blocked")
    if box:
        raise box[0]


@contextlib.contextmanager
def _socket_at(path: Path) -> Iterator[Path]:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.fspath(path))
    try:
        yield path
    finally:
        sock.close()


@pytest.mark.parametrize(("kind", "error", "pattern"), [
    ("missing", FileNotFoundError, "path: no such video file"),
    ("dangling symlink", FileNotFoundError, "path: no such video file .a symbolic link to a missing file"),
    ("directory", IsADirectoryError, "path: is a directory, not a video file"),
    ("fifo", ValueError, r"is not a regular file \(it is a named pipe \(FIFO\)\)"),
    ("fifo behind a symlink", ValueError, "is not a regular file"),
    ("socket", ValueError, r"is not a regular file \(it is a socket\)"),
    ("character device", ValueError, r"is not a regular file \(it is a character device\)"),
    ("empty file", ValueError, "path: file is empty"),
    ("trailing separator", NotADirectoryError, "path: no such video file"),
    ("bytes", TypeError, "path must be a path, got bytes"),
    ("None", TypeError, "path must be a path"),
    ("NUL", ValueError, "path: the path contains a NUL character"),
])
def test_probe_refuses_non_videos_at_once(tmp_path: Path, kind: str, error: type[BaseException],
                                          pattern: str) -> None:
    # ffmpeg blocked forever opening a FIFO with no writer: nothing may reach it.
    video = save_video(tmp_path / "v.webm", scene(1), fps=FPS)
    os.mkfifo(tmp_path / "p")
    (tmp_path / "e.webm").write_bytes(b"")
    (tmp_path / "dl.webm").symlink_to(tmp_path / "gone.webm")
    (tmp_path / "pl.webm").symlink_to(tmp_path / "p")
    targets: dict[str, object] = {
        "missing": tmp_path / "m.webm", "dangling symlink": tmp_path / "dl.webm", "directory": tmp_path,
        "fifo": tmp_path / "p", "fifo behind a symlink": tmp_path / "pl.webm", "socket": tmp_path / "s",
        "character device": os.devnull, "empty file": tmp_path / "e.webm", "trailing separator": f"{video}/",
        "bytes": os.fsencode(video), "None": None, "NUL": f"{video}\x00",
    }
    with contextlib.ExitStack() as stack:
        if kind == "socket":
            stack.enter_context(_socket_at(tmp_path / "s"))
        with pytest.raises(error, match=pattern):
            _within_20_s(lambda: probe_video(targets[kind]), tmp_path / "p")  # type: ignore[arg-type]
    assert stat.S_ISFIFO(os.stat(tmp_path / "p").st_mode)
