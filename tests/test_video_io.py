"""wanpy.video_io: WebM/MP4/GIF encoding through imageio-ffmpeg's ffmpeg, and probing."""

from __future__ import annotations

import gc
import os
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from wanpy import video_io
from wanpy.errors import EncodeError
from wanpy.video_io import (
    DEFAULT_QUALITY,
    VideoInfo,
    VideoWriter,
    WebMWriter,
    probe_video,
    save_video,
    write_webm,
)

from wanpy.testing.scenes import scene_frame

FPS = 16
W, H = 64, 48


def scene(n: int, height: int = H, width: int = W) -> np.ndarray:
    return np.stack([scene_frame(t, height, width, n=max(n, 2)) for t in range(n)])


def decode(path: Path) -> np.ndarray:
    """All frames of ``path`` as RGB uint8, decoded by ffmpeg (honouring the colour tags)."""
    # imageio_ffmpeg.read_frames leaks its pipes (ResourceWarning) once ffmpeg has exited.
    info = probe_video(path)
    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", f"file:{path}",
         "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", ["vp9", "vp8"])
@pytest.mark.parametrize("n", [1, 5, 161])
def test_round_trip_frame_count_fps_duration(tmp_path: Path, codec: str, n: int) -> None:
    out = write_webm(tmp_path / "clip.webm", scene(n), fps=FPS, codec=codec)
    info = probe_video(out)
    assert out == tmp_path / "clip.webm"
    assert info.frame_count == n
    assert info.fps == Fraction(16, 1)
    assert info.duration == n / 16
    assert (info.width, info.height, info.codec) == (W, H, codec)
    assert info.container_duration == pytest.approx(n / 16, abs=0.011)
    assert listing(tmp_path) == ["clip.webm"]


def test_161_frames_last_10_0625_seconds(tmp_path: Path) -> None:
    info = probe_video(write_webm(tmp_path / "c.webm", scene(161), fps=16))
    assert (info.frame_count, info.fps, info.duration) == (161, Fraction(16), 10.0625)
    assert str(info) == "c.webm: 161 frames, 64x48, vp9, 16 fps, 10.0625 s"


# RGB PSNR over 161 frames at 128x96. 4:2:0 chroma alone caps this scene at ~33 dB at this
# size (measured: vp9 32.0 / vp8 32.3 dB mean, both ~30 dB worst frame, at quality 60).
@pytest.mark.parametrize("codec", ["vp9", "vp8"])
def test_default_quality_psnr(tmp_path: Path, codec: str) -> None:
    frames = scene(161, 96, 128)
    out = write_webm(tmp_path / "q.webm", frames, fps=FPS, codec=codec)
    decoded = decode(out)
    assert decoded.shape == frames.shape
    values = [psnr(a, b) for a, b in zip(frames, decoded, strict=True)]
    assert np.mean(values) > 30.5
    assert min(values) > 28.5


def test_quality_trades_size(tmp_path: Path) -> None:
    frames = scene(33, 96, 128)
    low = write_webm(tmp_path / "low.webm", frames, fps=FPS, quality=20)
    high = write_webm(tmp_path / "high.webm", frames, fps=FPS, quality=90)
    assert low.stat().st_size < high.stat().st_size
    assert psnr(frames, decode(low)) < psnr(frames, decode(high))
    assert DEFAULT_QUALITY == 60


def test_iterable_of_frames_is_streamed(tmp_path: Path) -> None:
    produced = []

    def gen() -> Iterator[np.ndarray]:
        for t in range(7):
            produced.append(t)
            yield scene_frame(t, H, W)

    info = probe_video(write_webm(tmp_path / "g.webm", gen(), fps=FPS))
    assert produced == list(range(7))
    assert info.frame_count == 7


@pytest.mark.parametrize(("fps", "expected"), [
    (16, Fraction(16)),
    (16.0, Fraction(16)),
    (12.5, Fraction(25, 2)),
    (Fraction(30000, 1001), Fraction(30000, 1001)),
    (np.int64(24), Fraction(24)),
])
def test_fps_is_stored_exactly(tmp_path: Path, fps: object, expected: Fraction) -> None:
    info = probe_video(write_webm(tmp_path / "f.webm", scene(9), fps=fps))  # type: ignore[arg-type]
    assert info.fps == expected
    assert info.duration == float(9 / expected)


@pytest.mark.parametrize("fps", [0, -16, 0.0, float("nan"), float("inf"), Fraction(-1, 2)])
def test_bad_fps_is_rejected(tmp_path: Path, fps: object) -> None:
    with pytest.raises(ValueError, match="fps"):
        write_webm(tmp_path / "f.webm", scene(1), fps=fps)  # type: ignore[arg-type]
    assert listing(tmp_path) == []


@pytest.mark.parametrize("fps", [True, "16", None])
def test_fps_of_wrong_type_is_a_type_error(tmp_path: Path, fps: object) -> None:
    with pytest.raises(TypeError, match="fps"):
        write_webm(tmp_path / "f.webm", scene(1), fps=fps)  # type: ignore[arg-type]


@pytest.mark.parametrize("quality", [-1, 101])
def test_quality_out_of_range(tmp_path: Path, quality: int) -> None:
    with pytest.raises(ValueError, match=f"quality must be between 0 and 100, got {quality}"):
        write_webm(tmp_path / "q.webm", scene(1), fps=FPS, quality=quality)


def test_quality_must_be_an_int(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="quality"):
        write_webm(tmp_path / "q.webm", scene(1), fps=FPS, quality=50.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- frame validation


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64])
def test_wrong_dtype_names_it(tmp_path: Path, dtype: type) -> None:
    frames = scene(2).astype(dtype)
    with pytest.raises(ValueError, match=np.dtype(dtype).name):
        write_webm(tmp_path / "d.webm", frames, fps=FPS)
    assert listing(tmp_path) == []


def test_float_frames_with_convert_clip(tmp_path: Path) -> None:
    frames = scene(5)
    as_float = frames.astype(np.float32) / 255.0
    as_float[0, 0, 0] = 1.7  # clipped to 255
    as_float[0, 0, 1] = -0.3  # clipped to 0
    out = write_webm(tmp_path / "f.webm", as_float, fps=FPS, convert="clip")
    assert probe_video(out).frame_count == 5
    assert psnr(frames, decode(out)) > 25


def test_float_nan_is_rejected(tmp_path: Path) -> None:
    frames = scene(3).astype(np.float32) / 255.0
    frames[2, 5, 5, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2 contains NaN"):
        write_webm(tmp_path / "n.webm", frames, fps=FPS, convert="clip")
    assert listing(tmp_path) == []


def test_unknown_convert_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="convert must be None or 'clip', got 'scale'"):
        write_webm(tmp_path / "c.webm", scene(1), fps=FPS, convert="scale")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(2, 48, 64, 4), (2, 48, 64), (48, 64, 3), (2, 48, 64, 1)])
def test_wrong_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_webm(tmp_path / "s.webm", np.zeros(shape, np.uint8), fps=FPS)
    assert listing(tmp_path) == []


def test_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        write_webm(tmp_path / "e.webm", np.zeros((0, H, W, 3), np.uint8), fps=FPS)
    with pytest.raises(ValueError, match="empty"):
        write_webm(tmp_path / "e.webm", iter([]), fps=FPS)
    assert listing(tmp_path) == []


def test_frames_of_different_sizes_in_an_iterable(tmp_path: Path) -> None:
    frames = [scene_frame(0, H, W), scene_frame(1, H, W), scene_frame(2, 32, 32)]
    with pytest.raises(ValueError, match="size of the first one \\(64x48\\), got 32x32 at frame 2"):
        write_webm(tmp_path / "m.webm", frames, fps=FPS)
    assert listing(tmp_path) == []


# ---------------------------------------------------------------- odd sizes


def test_odd_size_is_an_error_by_default(tmp_path: Path) -> None:
    frames = scene(2, 47, 63)
    with pytest.raises(ValueError, match=r"got 63x47; pass pad=True .*\(64x48\)"):
        write_webm(tmp_path / "o.webm", frames, fps=FPS)
    assert listing(tmp_path) == []


def test_odd_size_padded_by_edge_replication(tmp_path: Path) -> None:
    frames = np.zeros((3, 47, 63, 3), np.uint8)
    frames[:, :, -1] = (200, 40, 40)  # last column
    frames[:, -1, :] = (40, 200, 40)  # last row
    out = write_webm(tmp_path / "o.webm", frames, fps=FPS, pad=True, quality=90)
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (64, 48, 3)
    decoded = decode(out).astype(int)
    # The added column repeats the last one and the added row the last row.
    assert np.abs(decoded[:, 10:40, 63] - (200, 40, 40)).mean() < 12
    assert np.abs(decoded[:, 47, 10:50] - (40, 200, 40)).mean() < 12


def test_gif_keeps_odd_sizes(tmp_path: Path) -> None:
    info = probe_video(save_video(tmp_path / "o.gif", scene(4, 47, 63), fps=FPS))
    assert (info.width, info.height, info.frame_count) == (63, 47, 4)


# ---------------------------------------------------------------- atomicity and failures


def test_iterator_raising_midway_leaves_nothing(tmp_path: Path) -> None:
    def gen() -> Iterator[np.ndarray]:
        for t in range(10):
            if t == 6:
                raise RuntimeError("decoder exploded")
            yield scene_frame(t, H, W)

    with pytest.raises(EncodeError, match="RuntimeError: decoder exploded after 6 frames") as err:
        write_webm(tmp_path / "x.webm", gen(), fps=FPS)
    assert isinstance(err.value.__cause__, RuntimeError)
    assert listing(tmp_path) == []


def test_keyboard_interrupt_is_reraised_after_cleanup(tmp_path: Path) -> None:
    def gen() -> Iterator[np.ndarray]:
        yield scene_frame(0, H, W)
        yield scene_frame(1, H, W)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_webm(tmp_path / "k.webm", gen(), fps=FPS)
    assert listing(tmp_path) == []


def test_ffmpeg_failure_raises_encode_error_with_its_message(tmp_path: Path) -> None:
    # libvpx's VP8 encoder refuses widths above 16383.
    frames = np.zeros((2, 2, 16384, 3), np.uint8)
    with pytest.raises(EncodeError, match="16383") as err:
        write_webm(tmp_path / "wide.webm", frames, fps=FPS, codec="vp8")
    assert "16383" in err.value.ffmpeg_message
    assert err.value.path == str(tmp_path / "wide.webm")
    assert listing(tmp_path) == []


def test_ffmpeg_exiting_while_frames_are_piped(tmp_path: Path) -> None:
    # 64 frames of 96 KiB overflow the pipe, so ffmpeg exits while frames are written.
    frames = np.zeros((64, 2, 16384, 3), np.uint8)
    with pytest.raises(EncodeError, match="16383"):
        write_webm(tmp_path / "wide.webm", frames, fps=FPS, codec="vp8")
    assert listing(tmp_path) == []


def test_failed_encode_keeps_the_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.webm"
    target.write_bytes(b"previous video")

    def gen() -> Iterator[np.ndarray]:
        yield scene_frame(0, H, W)
        raise OSError("disk gone")

    with pytest.raises(EncodeError):
        write_webm(target, gen(), fps=FPS)
    assert target.read_bytes() == b"previous video"
    assert listing(tmp_path) == ["keep.webm"]


def test_successful_encode_replaces_the_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "r.webm"
    target.write_bytes(b"old")
    write_webm(target, scene(3), fps=FPS)
    assert probe_video(target).frame_count == 3
    assert listing(tmp_path) == ["r.webm"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        write_webm(tmp_path / "nope" / "c.webm", scene(1), fps=FPS)
    assert not (tmp_path / "nope").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can write into read-only directories")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot create a file in the output directory"):
            write_webm(locked / "c.webm", scene(1), fps=FPS)
    finally:
        locked.chmod(0o700)


def test_permission_error_names_the_directory(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores directory permissions, so refuse the temporary file's creation instead.
    real_open = os.open

    def refuse(path: object, flags: int, *args: object) -> int:
        if flags & os.O_EXCL:
            raise PermissionError(13, "Permission denied", os.fspath(path))  # type: ignore[arg-type]
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse)
    message = "cannot create a file in the output directory"
    with pytest.raises(PermissionError, match=message) as err:
        write_webm(tmp_path / "c.webm", scene(1), fps=FPS)
    assert err.value.filename == str(tmp_path)


def test_unicode_and_spaces_in_path(tmp_path: Path) -> None:
    folder = tmp_path / "my clips ☃"
    folder.mkdir()
    out = write_webm(folder / "vidéo 日本: 1.webm", scene(5), fps=FPS)
    assert out.name == "vidéo 日本: 1.webm"
    info = probe_video(out)
    assert info.frame_count == 5
    assert str(info).startswith("vidéo 日本: 1.webm: 5 frames")


def test_new_file_honours_the_umask(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    out = write_webm(tmp_path / "m.webm", scene(1), fps=FPS)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


# ---------------------------------------------------------------- streaming writer


def test_writer_appends_clips(tmp_path: Path) -> None:
    first, second = scene(5), scene(9)
    with WebMWriter(tmp_path / "w.webm", fps=FPS) as w:
        w.write(first)
        w.write(second[0])  # one frame
        w.write(second[1:])
        assert w.frames_written == 14
        assert listing(tmp_path) != ["w.webm"]  # only the hidden temporary file so far
    assert w.closed
    info = probe_video(tmp_path / "w.webm")
    assert (info.frame_count, info.codec) == (14, "vp9")
    assert listing(tmp_path) == ["w.webm"]


def test_writer_temporary_file_is_hidden_in_the_target_directory(tmp_path: Path) -> None:
    with WebMWriter(tmp_path / "w.webm", fps=FPS) as w:
        w.write(scene(2))
        (temp,) = listing(tmp_path)
        assert temp.startswith(".w.webm.") and temp.endswith(".part")
    assert listing(tmp_path) == ["w.webm"]


def test_writer_garbage_collected_unclosed(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    w = WebMWriter(tmp_path / "g.webm", fps=FPS)
    w.write(scene(2))
    del w
    gc.collect()
    assert listing(tmp_path) == []
    assert "was never closed" in caplog.text


def test_writer_vp8_and_idempotent_close(tmp_path: Path) -> None:
    w = WebMWriter(tmp_path / "v.webm", fps=FPS, codec="vp8")
    w.write(scene(4))
    w.close()
    w.close()
    assert probe_video(tmp_path / "v.webm").codec == "vp8"
    with pytest.raises(ValueError, match="closed"):
        w.write(scene(1))


def test_writer_rejects_a_different_shape(tmp_path: Path) -> None:
    with (pytest.raises(ValueError, match=r"size of the first one \(64x48\), got 32x48"),
          WebMWriter(tmp_path / "s.webm", fps=FPS) as w):
            w.write(scene(3))
            w.write(scene(2, 48, 32))
    assert listing(tmp_path) == []


def test_writer_rejected_frame_is_not_written(tmp_path: Path) -> None:
    with WebMWriter(tmp_path / "s.webm", fps=FPS) as w:
        w.write(scene(3))
        with pytest.raises(ValueError, match="uint16"):
            w.write(scene(2).astype(np.uint16))
        assert w.frames_written == 3
    assert probe_video(tmp_path / "s.webm").frame_count == 3


def test_writer_exception_in_block_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="stop"), WebMWriter(tmp_path / "a.webm", fps=FPS) as w:
            w.write(scene(3))
            raise RuntimeError("stop")
    assert listing(tmp_path) == []


def test_writer_abort(tmp_path: Path) -> None:
    w = WebMWriter(tmp_path / "a.webm", fps=FPS)
    w.write(scene(3))
    w.abort()
    w.abort()
    w.close()  # after abort: nothing to do
    assert listing(tmp_path) == []


def test_writer_without_frames(tmp_path: Path) -> None:
    with (pytest.raises(ValueError, match="no frames were written"),
          WebMWriter(tmp_path / "z.webm", fps=FPS)):
            pass
    assert listing(tmp_path) == []


# ---------------------------------------------------------------- containers and codecs


def test_mp4(tmp_path: Path) -> None:
    frames = scene(21, 96, 128)
    out = save_video(tmp_path / "c.mp4", frames, fps=FPS)
    info = probe_video(out)
    assert (info.codec, info.frame_count, info.fps, info.width) == ("h264", 21, Fraction(16), 128)
    assert psnr(frames, decode(out)) > 30
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head  # +faststart


def test_mp4_falls_back_to_openh264(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_io, "_encoders", lambda exe: frozenset({"libopenh264"}))
    frames = scene(9, 96, 128)
    out = save_video(tmp_path / "o.mp4", frames, fps=FPS)
    assert (probe_video(out).codec, probe_video(out).frame_count) == ("h264", 9)
    assert psnr(frames, decode(out)) > 30


def test_missing_encoder_is_an_encode_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_io, "_encoders", lambda exe: frozenset({"libvpx"}))
    with pytest.raises(EncodeError, match="has no libvpx-vp9 encoder"):
        write_webm(tmp_path / "c.webm", scene(1), fps=FPS)
    with pytest.raises(EncodeError, match="neither libx264 nor libopenh264"):
        save_video(tmp_path / "c.mp4", scene(1), fps=FPS)
    assert listing(tmp_path) == []


def test_gif_timing(tmp_path: Path) -> None:
    out = save_video(tmp_path / "c.gif", scene(161, 24, 32), fps=FPS)
    info = probe_video(out)
    assert (info.codec, info.frame_count, info.fps) == ("gif", 161, Fraction(16))
    with Image.open(out) as im:
        delays = []
        for i in range(im.n_frames):
            im.seek(i)
            delays.append(im.info["duration"])
    # Centisecond delays alternate to keep 16 fps on average: 10.06 s for 10.0625 s.
    assert set(delays) == {60, 70}
    assert sum(delays) == 10060


def test_save_video_webm_codecs(tmp_path: Path) -> None:
    assert probe_video(save_video(tmp_path / "a.webm", scene(2), fps=FPS)).codec == "vp9"
    vp8 = save_video(tmp_path / "b.WEBM", scene(2), fps=FPS, codec="VP8")
    assert probe_video(vp8).codec == "vp8"


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'\.avi'.*supported: \.webm, \.mp4, \.gif"):
        save_video(tmp_path / "c.avi", scene(1), fps=FPS)
    with pytest.raises(ValueError, match="supported"):
        save_video(tmp_path / "noext", scene(1), fps=FPS)


@pytest.mark.parametrize(("name", "codec"), [("c.webm", "h264"), ("c.mp4", "vp9"),
                                             ("c.gif", "vp8"), ("c.webm", "av1")])
def test_codec_not_valid_for_container(tmp_path: Path, name: str, codec: str) -> None:
    with pytest.raises(ValueError, match=f"codec '{codec}' cannot be written to a"):
        save_video(tmp_path / name, scene(1), fps=FPS, codec=codec)


def test_write_webm_requires_webm_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must end in .webm"):
        write_webm(tmp_path / "c.mp4", scene(1), fps=FPS)


def test_gif_rejects_quality_and_high_fps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quality does not apply to .gif"):
        save_video(tmp_path / "c.gif", scene(1), fps=FPS, quality=50)
    with pytest.raises(ValueError, match="at most 50 fps"):
        save_video(tmp_path / "c.gif", scene(1), fps=60)


def test_generic_writer_mp4(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "w.mp4", fps=Fraction(24000, 1001)) as w:
        w.write(scene(4))
        w.write(scene(3))
    info = probe_video(tmp_path / "w.mp4")
    assert (info.frame_count, info.fps) == (7, Fraction(24000, 1001))


# ---------------------------------------------------------------- probe


def test_probe_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "missing.webm")


def test_probe_not_a_video(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.webm"
    bogus.write_text("not a video")
    with pytest.raises(ValueError, match="(?s)is not a readable video: .*Invalid data"):
        probe_video(bogus)


def test_probe_counts_decoded_frames(tmp_path: Path) -> None:
    # A truncated file: the container still declares 161 frames' worth of duration,
    # but only the frames that decode are counted.
    out = write_webm(tmp_path / "t.webm", scene(161), fps=FPS, codec="vp8")
    data = out.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) // 2])
    info = probe_video(cut)
    assert 0 < info.frame_count < 161
    assert info.duration == info.frame_count / 16


def test_video_info_is_frozen(tmp_path: Path) -> None:
    info = probe_video(write_webm(tmp_path / "i.webm", scene(2), fps=FPS))
    assert isinstance(info, VideoInfo)
    with pytest.raises(AttributeError):
        info.frame_count = 3  # type: ignore[misc]
