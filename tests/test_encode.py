"""wanpy.encode: WebM/MP4/GIF encoding through imageio-ffmpeg's ffmpeg (atomic, validated)."""

from __future__ import annotations

import gc
import os
import stat
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from wanpy import formats
from wanpy.encode import DEFAULT_QUALITY, VideoWriter, check_output, save_video
from wanpy.errors import EncodeError
from wanpy.probe import probe_video

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
    out = save_video(tmp_path / "clip.webm", scene(n), fps=FPS, codec=codec)
    info = probe_video(out)
    assert out == tmp_path / "clip.webm"
    assert info.frame_count == n
    assert info.fps == Fraction(16, 1)
    assert info.duration == n / 16
    assert (info.width, info.height, info.codec) == (W, H, codec)
    assert info.container_duration == pytest.approx(n / 16, abs=0.011)
    assert listing(tmp_path) == ["clip.webm"]


def test_161_frames_last_10_0625_seconds(tmp_path: Path) -> None:
    info = probe_video(save_video(tmp_path / "c.webm", scene(161), fps=16))
    assert (info.frame_count, info.fps, info.duration) == (161, Fraction(16), 10.0625)
    assert str(info) == "c.webm: 161 frames, 64x48, vp9, 16 fps, 10.0625 s"


# RGB PSNR over 161 frames at 128x96. 4:2:0 chroma alone caps this scene at ~33 dB at this
# size (measured: vp9 32.0 / vp8 32.3 dB mean, both ~30 dB worst frame, at quality 60).
@pytest.mark.parametrize("codec", ["vp9", "vp8"])
def test_default_quality_psnr(tmp_path: Path, codec: str) -> None:
    frames = scene(161, 96, 128)
    out = save_video(tmp_path / "q.webm", frames, fps=FPS, codec=codec)
    decoded = decode(out)
    assert decoded.shape == frames.shape
    values = [psnr(a, b) for a, b in zip(frames, decoded, strict=True)]
    assert np.mean(values) > 30.5
    assert min(values) > 28.5


def test_quality_trades_size(tmp_path: Path) -> None:
    frames = scene(33, 96, 128)
    low = save_video(tmp_path / "low.webm", frames, fps=FPS, quality=20)
    high = save_video(tmp_path / "high.webm", frames, fps=FPS, quality=90)
    assert low.stat().st_size < high.stat().st_size
    assert psnr(frames, decode(low)) < psnr(frames, decode(high))
    assert DEFAULT_QUALITY == 60


def test_iterable_of_frames_is_streamed(tmp_path: Path) -> None:
    produced = []

    def gen() -> Iterator[np.ndarray]:
        for t in range(7):
            produced.append(t)
            yield scene_frame(t, H, W)

    info = probe_video(save_video(tmp_path / "g.webm", gen(), fps=FPS))
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
    info = probe_video(save_video(tmp_path / "f.webm", scene(9), fps=fps))  # type: ignore[arg-type]
    assert info.fps == expected
    assert info.duration == float(9 / expected)


@pytest.mark.parametrize("fps", [0, -16, 0.0, float("nan"), float("inf"), Fraction(-1, 2)])
def test_bad_fps_is_rejected(tmp_path: Path, fps: object) -> None:
    with pytest.raises(ValueError, match="fps"):
        save_video(tmp_path / "f.webm", scene(1), fps=fps)  # type: ignore[arg-type]
    assert listing(tmp_path) == []


@pytest.mark.parametrize("fps", [True, "16", None])
def test_fps_of_wrong_type_is_a_type_error(tmp_path: Path, fps: object) -> None:
    with pytest.raises(TypeError, match="fps"):
        save_video(tmp_path / "f.webm", scene(1), fps=fps)  # type: ignore[arg-type]


@pytest.mark.parametrize("quality", [-1, 101])
def test_quality_out_of_range(tmp_path: Path, quality: int) -> None:
    with pytest.raises(ValueError, match=f"quality must be between 0 and 100, got {quality}"):
        save_video(tmp_path / "q.webm", scene(1), fps=FPS, quality=quality)


def test_quality_must_be_an_int(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="quality"):
        save_video(tmp_path / "q.webm", scene(1), fps=FPS, quality=50.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- frame validation


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64])
def test_wrong_dtype_names_it(tmp_path: Path, dtype: type) -> None:
    frames = scene(2).astype(dtype)
    with pytest.raises(ValueError, match=np.dtype(dtype).name):
        save_video(tmp_path / "d.webm", frames, fps=FPS)
    assert listing(tmp_path) == []


def test_float_frames_with_convert_clip(tmp_path: Path) -> None:
    frames = scene(5)
    as_float = frames.astype(np.float32) / 255.0
    as_float[0, 0, 0] = 1.7  # clipped to 255
    as_float[0, 0, 1] = -0.3  # clipped to 0
    out = save_video(tmp_path / "f.webm", as_float, fps=FPS, convert="clip")
    assert probe_video(out).frame_count == 5
    assert psnr(frames, decode(out)) > 25


def test_float_nan_is_rejected(tmp_path: Path) -> None:
    frames = scene(3).astype(np.float32) / 255.0
    frames[2, 5, 5, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2 contains NaN"):
        save_video(tmp_path / "n.webm", frames, fps=FPS, convert="clip")
    assert listing(tmp_path) == []


def test_unknown_convert_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="convert must be None or 'clip', got 'scale'"):
        save_video(tmp_path / "c.webm", scene(1), fps=FPS, convert="scale")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(2, 48, 64, 4), (2, 48, 64), (48, 64, 3), (2, 48, 64, 1)])
def test_wrong_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        save_video(tmp_path / "s.webm", np.zeros(shape, np.uint8), fps=FPS)
    assert listing(tmp_path) == []


def test_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        save_video(tmp_path / "e.webm", np.zeros((0, H, W, 3), np.uint8), fps=FPS)
    with pytest.raises(ValueError, match="empty"):
        save_video(tmp_path / "e.webm", iter([]), fps=FPS)
    assert listing(tmp_path) == []


def test_frames_of_different_sizes_in_an_iterable(tmp_path: Path) -> None:
    frames = [scene_frame(0, H, W), scene_frame(1, H, W), scene_frame(2, 32, 32)]
    with pytest.raises(ValueError, match="size of the first one \\(64x48\\), got 32x32 at frame 2"):
        save_video(tmp_path / "m.webm", frames, fps=FPS)
    assert listing(tmp_path) == []


# ---------------------------------------------------------------- odd sizes


def test_odd_size_is_an_error_by_default(tmp_path: Path) -> None:
    frames = scene(2, 47, 63)
    with pytest.raises(ValueError, match=r"got 63x47; pass pad=True .*\(64x48\)"):
        save_video(tmp_path / "o.webm", frames, fps=FPS)
    assert listing(tmp_path) == []


def test_odd_size_padded_by_edge_replication(tmp_path: Path) -> None:
    frames = np.zeros((3, 47, 63, 3), np.uint8)
    frames[:, :, -1] = (200, 40, 40)  # last column
    frames[:, -1, :] = (40, 200, 40)  # last row
    out = save_video(tmp_path / "o.webm", frames, fps=FPS, pad=True, quality=90)
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
        save_video(tmp_path / "x.webm", gen(), fps=FPS)
    assert isinstance(err.value.__cause__, RuntimeError)
    assert listing(tmp_path) == []


def test_keyboard_interrupt_is_reraised_after_cleanup(tmp_path: Path) -> None:
    def gen() -> Iterator[np.ndarray]:
        yield scene_frame(0, H, W)
        yield scene_frame(1, H, W)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_video(tmp_path / "k.webm", gen(), fps=FPS)
    assert listing(tmp_path) == []


def test_ffmpeg_failure_raises_encode_error_with_its_message(tmp_path: Path) -> None:
    # libvpx's VP8 encoder refuses widths above 16383.
    frames = np.zeros((2, 2, 16384, 3), np.uint8)
    with pytest.raises(EncodeError, match="16383") as err:
        save_video(tmp_path / "wide.webm", frames, fps=FPS, codec="vp8")
    assert "16383" in err.value.ffmpeg_message
    assert err.value.path == str(tmp_path / "wide.webm")
    assert listing(tmp_path) == []


def test_ffmpeg_exiting_while_frames_are_piped(tmp_path: Path) -> None:
    # 64 frames of 96 KiB overflow the pipe, so ffmpeg exits while frames are written.
    frames = np.zeros((64, 2, 16384, 3), np.uint8)
    with pytest.raises(EncodeError, match="16383"):
        save_video(tmp_path / "wide.webm", frames, fps=FPS, codec="vp8")
    assert listing(tmp_path) == []


def test_failed_encode_keeps_the_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.webm"
    target.write_bytes(b"previous video")

    def gen() -> Iterator[np.ndarray]:
        yield scene_frame(0, H, W)
        raise OSError("disk gone")

    with pytest.raises(EncodeError):
        save_video(target, gen(), fps=FPS)
    assert target.read_bytes() == b"previous video"
    assert listing(tmp_path) == ["keep.webm"]


def test_successful_encode_replaces_the_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "r.webm"
    target.write_bytes(b"old")
    save_video(target, scene(3), fps=FPS)
    assert probe_video(target).frame_count == 3
    assert listing(tmp_path) == ["r.webm"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        save_video(tmp_path / "nope" / "c.webm", scene(1), fps=FPS)
    assert not (tmp_path / "nope").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can write into read-only directories")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot create a file in the output directory"):
            save_video(locked / "c.webm", scene(1), fps=FPS)
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
        save_video(tmp_path / "c.webm", scene(1), fps=FPS)
    assert err.value.filename == str(tmp_path)


def test_unicode_and_spaces_in_path(tmp_path: Path) -> None:
    folder = tmp_path / "my clips ☃"
    folder.mkdir()
    out = save_video(folder / "vidéo 日本: 1.webm", scene(5), fps=FPS)
    assert out.name == "vidéo 日本: 1.webm"
    info = probe_video(out)
    assert info.frame_count == 5
    assert str(info).startswith("vidéo 日本: 1.webm: 5 frames")


def test_new_file_honours_the_umask(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    out = save_video(tmp_path / "m.webm", scene(1), fps=FPS)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


# ---------------------------------------------------------------- streaming writer


def test_writer_appends_clips(tmp_path: Path) -> None:
    first, second = scene(5), scene(9)
    with VideoWriter(tmp_path / "w.webm", fps=FPS) as w:
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
    with VideoWriter(tmp_path / "w.webm", fps=FPS) as w:
        w.write(scene(2))
        (temp,) = listing(tmp_path)
        assert temp.startswith(".w.webm.") and temp.endswith(".part")
    assert listing(tmp_path) == ["w.webm"]


def test_writer_garbage_collected_unclosed(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    w = VideoWriter(tmp_path / "g.webm", fps=FPS)
    w.write(scene(2))
    del w
    gc.collect()
    assert listing(tmp_path) == []
    assert "was never closed" in caplog.text


def test_writer_vp8_and_idempotent_close(tmp_path: Path) -> None:
    w = VideoWriter(tmp_path / "v.webm", fps=FPS, codec="vp8")
    w.write(scene(4))
    w.close()
    w.close()
    assert probe_video(tmp_path / "v.webm").codec == "vp8"
    with pytest.raises(ValueError, match="closed"):
        w.write(scene(1))


def test_writer_rejects_a_different_shape(tmp_path: Path) -> None:
    with (pytest.raises(ValueError, match=r"size of the first one \(64x48\), got 32x48"),
          VideoWriter(tmp_path / "s.webm", fps=FPS) as w):
            w.write(scene(3))
            w.write(scene(2, 48, 32))
    assert listing(tmp_path) == []


def test_writer_rejected_frame_is_not_written(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "s.webm", fps=FPS) as w:
        w.write(scene(3))
        with pytest.raises(ValueError, match="uint16"):
            w.write(scene(2).astype(np.uint16))
        assert w.frames_written == 3
    assert probe_video(tmp_path / "s.webm").frame_count == 3


def test_writer_exception_in_block_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="stop"), VideoWriter(tmp_path / "a.webm", fps=FPS) as w:
            w.write(scene(3))
            raise RuntimeError("stop")
    assert listing(tmp_path) == []


def test_writer_abort(tmp_path: Path) -> None:
    w = VideoWriter(tmp_path / "a.webm", fps=FPS)
    w.write(scene(3))
    w.abort()
    w.abort()
    w.close()  # after abort: nothing to do
    assert listing(tmp_path) == []


def test_writer_without_frames(tmp_path: Path) -> None:
    with (pytest.raises(ValueError, match="no frames were written"),
          VideoWriter(tmp_path / "z.webm", fps=FPS)):
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
    monkeypatch.setattr(formats, "_encoders", lambda exe: frozenset({"libopenh264"}))
    frames = scene(9, 96, 128)
    out = save_video(tmp_path / "o.mp4", frames, fps=FPS)
    assert (probe_video(out).codec, probe_video(out).frame_count) == ("h264", 9)
    assert psnr(frames, decode(out)) > 30


def test_missing_encoder_is_an_encode_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "_encoders", lambda exe: frozenset({"libvpx"}))
    with pytest.raises(EncodeError, match="has no libvpx-vp9 encoder"):
        save_video(tmp_path / "c.webm", scene(1), fps=FPS)
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


def test_webm_codec_requires_webm_extension(tmp_path: Path) -> None:
    # (was write_webm's own check; one writer now: asking for a WebM codec in another container)
    with pytest.raises(ValueError, match="codec 'vp9' cannot be written to a .mp4 file"):
        save_video(tmp_path / "c.mp4", scene(1), fps=FPS, codec="vp9")


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


# ---------------------------------------------------------------- frame rates each container keeps (#17)


def gif_delays(path: Path) -> list[int]:
    with Image.open(path) as im:
        delays = []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            delays.append(im.info["duration"])
    return delays


@pytest.mark.parametrize(("name", "fps", "pattern"), [
    ("c.webm", 5000, r"fps 5000 cannot be kept in a \.webm file: WebM timestamps are whole milliseconds; "
                     "WebM takes at most 1000 fps"),
    ("c.webm", 1001, "at most 1000 fps"),
    ("c.webm", Fraction(30001, 1001), r"reads back as 27933/932 fps; WebM takes rates from 1/30000 to 1000"),
    ("c.webm", Fraction(1, 30001), "reads back as 1/30000 fps"),
    ("c.webm", Fraction(49, 10), r"multiples of 1/12 fps up to 5 \(nearest: 29/6 or 59/12\)"),
    ("c.webm", Fraction(1000, 1001), "multiples of 1/12 fps"),
    ("c.mp4", Fraction(1, 65536),
     "MP4 counts 1073741824 ticks of 1/16384 s per frame .* the slowest MP4 rate with numerator 1 is 1/65535 fps"),
    ("c.mp4", Fraction(1, 10**6), "beyond the signed 32-bit"),
    ("c.gif", 60, "use at most 50 fps"),
    ("c.gif", Fraction(1, 1000), "a GIF delay is at most 65535 cs .655.35 s.; GIF takes 100/65535 to 50 fps"),
    ("c.mp4", 1_001_001, "numerator and denominator are at most 1001000 .it would use 1001000."),
    ("c.webm", Fraction(1, 1_001_001), "at most 1001000"),
])
def test_rate_the_container_would_change_is_refused(tmp_path: Path, name: str, fps: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        save_video(tmp_path / name, scene(2), fps=fps)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=pattern):
        VideoWriter(tmp_path / name, fps=fps)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=pattern):
        check_output(tmp_path / name, fps=fps)  # type: ignore[arg-type]
    assert listing(tmp_path) == []


# Each at or next to a limit above; the probe must read the rate back exactly.
@pytest.mark.parametrize(("name", "fps"), [
    ("c.webm", 1000), ("c.webm", 999), ("c.webm", Fraction(1, 30000)), ("c.webm", Fraction(59, 12)),
    ("c.webm", Fraction(2, 5)), ("c.webm", Fraction(6000, 1001)),
    ("c.mp4", Fraction(1, 65535)), ("c.mp4", 1_001_000), ("c.mp4", Fraction(1_000_000, 999_999)),
    ("c.mp4", Fraction(123457, 1000)),  # ffmpeg used to re-guess this one as 120 fps
    ("c.gif", 50), ("c.gif", 1),
])
def test_rate_at_the_limits_reads_back_exactly(tmp_path: Path, name: str, fps: object) -> None:
    info = probe_video(save_video(tmp_path / name, scene(6, 16, 16), fps=fps))  # type: ignore[arg-type]
    assert (info.fps, info.frame_count) == (fps, 6)


def test_slow_gif_keeps_its_delays(tmp_path: Path) -> None:
    # ffmpeg's probe guesses a GIF's rate from delays up to ~5 s only, so read them directly.
    assert gif_delays(save_video(tmp_path / "a.gif", scene(3, 8, 8), fps=Fraction(1, 7))) == [7000] * 3
    slowest = save_video(tmp_path / "b.gif", scene(2, 8, 8), fps=Fraction(100, 65535))
    assert gif_delays(slowest) == [655350, 655350]


# ---------------------------------------------------------------- paths (#17)


def test_trailing_separator_is_refused(tmp_path: Path) -> None:
    for call in (lambda p: save_video(p, scene(1), fps=FPS), lambda p: VideoWriter(p, fps=FPS), check_output):
        with pytest.raises(ValueError, match="names a directory .it ends in a separator"):
            call(f"{tmp_path / 'clip.webm'}/")
    assert listing(tmp_path) == []


def test_longest_legal_name_is_written(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "n" * (limit - 5) + ".webm"
    out = save_video(tmp_path / name, scene(2), fps=FPS)
    assert (out.name, probe_video(out).frame_count) == (name, 2)
    with VideoWriter(tmp_path / name, fps=FPS) as w:
        w.write(scene(3))
        (temp,) = [n for n in listing(tmp_path) if n != name]
        assert temp.startswith(".nnn") and temp.endswith(".part") and len(temp) <= limit
    assert listing(tmp_path) == [name]
    assert check_output(tmp_path / name) == tmp_path / name


def test_name_too_long_is_a_clear_error(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "n" * (limit - 4) + ".webm"
    for call, arg in ((lambda p: save_video(p, scene(1), fps=FPS), "path"), (check_output, "output")):
        with pytest.raises(ValueError, match=f"{arg}: the file name is {limit + 1} bytes long.*'nnnn"):
            call(tmp_path / name)
    assert listing(tmp_path) == []


def test_non_utf8_name(tmp_path: Path) -> None:
    name = os.fsdecode(b"clip\xff.webm")
    out = save_video(tmp_path / name, scene(3), fps=FPS)
    assert os.listdir(os.fsencode(tmp_path)) == [b"clip\xff.webm"]
    assert probe_video(out).frame_count == 3
    assert check_output(tmp_path / name) == tmp_path / name


def test_failure_message_with_a_non_utf8_name_prints(tmp_path: Path) -> None:
    frames = np.zeros((2, 2, 16384, 3), np.uint8)  # libvpx's VP8 refuses widths above 16383
    with pytest.raises(EncodeError) as err:
        save_video(tmp_path / os.fsdecode(b"w\xfe.webm"), frames, fps=FPS, codec="vp8")
    assert "w\\xfe.webm" in str(err.value)
    str(err.value).encode("utf-8")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_output_that_is_not_a_file_is_left_alone(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "c.webm"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    error = ValueError if kind == "fifo" else IsADirectoryError
    for call in (lambda p: save_video(p, scene(1), fps=FPS), lambda p: VideoWriter(p, fps=FPS), check_output):
        with pytest.raises(error):
            call(target)
    assert stat.S_ISFIFO(os.lstat(target).st_mode) if kind == "fifo" else target.is_dir()
    assert listing(tmp_path) == ["c.webm"]


# ---------------------------------------------------------------- every error names its argument (#17)


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"path": 123}, TypeError, "path must be a path"),
    ({"path": b"c.webm"}, TypeError, "path must be a path, got bytes"),
    ({"path": ""}, ValueError, "path is an empty path"),
    ({"path": "c.avi"}, ValueError, "path: unsupported video file extension '.avi'"),
    ({"frames": "frames"}, TypeError, "frames must be a"),
    ({"frames": [np.zeros((4, 4), np.uint8)]}, ValueError, r"frames: each frame must have shape \(H, W, 3\)"),
    ({"frames": np.zeros((1, 3, 4, 3), np.uint8)}, ValueError, "frames: width and height must be even"),
    ({"frames": np.zeros((1, 0, 4, 3), np.uint8)}, ValueError, "frames must be at least 1x1"),
    ({"fps": "16"}, TypeError, "fps must be"),
    ({"fps": 10**400}, ValueError, "fps"),
    ({"fps": 1e308}, ValueError, "fps"),
    ({"codec": 9}, TypeError, "codec must be a string"),
    ({"quality": "high"}, TypeError, "quality must be an int"),
    ({"pad": "no"}, TypeError, "pad must be True or False"),
    ({"convert": "scale"}, ValueError, "convert must be None or 'clip'"),
])
def test_errors_name_the_argument(tmp_path: Path, kwargs: dict[str, object], error: type[BaseException],
                                  pattern: str) -> None:
    args: dict[str, object] = {"path": tmp_path / "c.webm", "frames": scene(1), "fps": FPS, **kwargs}
    with pytest.raises(error, match=pattern):
        save_video(**args)  # type: ignore[arg-type]
    assert listing(tmp_path) == []


def test_check_output_names_its_argument(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="output must be a path"):
        check_output(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="out_file: the output directory does not exist"):
        check_output(tmp_path / "no" / "c.mp4", name="out_file")
    assert check_output(tmp_path / "c.mp4", fps=Fraction(30000, 1001)) == tmp_path / "c.mp4"
    assert listing(tmp_path) == []


def _directory_of_length(root: Path, total: int) -> Path:
    """A directory whose absolute path is ``total`` bytes long, nested under ``root``."""
    d = os.fspath(root)
    while len(os.fsencode(d)) < total - 250:
        d = os.path.join(d, "d" * 200)
    d = os.path.join(d, "e" * (total - len(os.fsencode(d)) - 1))
    os.makedirs(d)
    return Path(d)


def test_path_near_path_max(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_PATH_MAX") - 1  # bytes a path may have, without the NUL
    roomy = _directory_of_length(tmp_path / "a", limit - 20)  # ".c.webm.XXXXXXXX.part" needs 22 with the "/"
    out = save_video(roomy / "c.webm", scene(2), fps=FPS)
    assert (probe_video(out).frame_count, listing(roomy)) == (2, ["c.webm"])
    tight = _directory_of_length(tmp_path / "b", limit - 10)  # room for "c.webm", none for any temporary name
    with pytest.raises(ValueError, match="path: .* is too long to write atomically"):
        save_video(tight / "c.webm", scene(1), fps=FPS)
    assert listing(tight) == []


def test_unwritable_directory_seen_by_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (root ignores directory modes, so the refusal is simulated where the check asks)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)
    for call in (lambda p: save_video(p, scene(1), fps=FPS), check_output):
        with pytest.raises(PermissionError, match="cannot create a file in the output directory") as err:
            call(tmp_path / "c.webm")
        assert err.value.filename == str(tmp_path)
