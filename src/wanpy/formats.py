"""What each video container takes: codecs, the quality scale, frame rates, and the
ffmpeg arguments that encode them. :mod:`wanpy.encode` writes the files.

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

Colour
    WebM and MP4 are written as yuv420p, limited range, BT.709 matrix (VP8: BT.601, the
    only one VP8 defines), tagged in the file.

Frame rates
    A rate a container cannot keep is refused, never stored as another one. ffmpeg takes
    rates whose numerator and denominator are at most 1001000.
    WebM: timestamps are whole milliseconds, so at most 1000 fps; the rate itself is
    stored as a frame duration in whole nanoseconds that readers turn back into a
    fraction with terms up to 30000, so it must read back exactly (16, 12.5, 30000/1001
    and 1/30000 do; 30001/1001 would read as 27933/932).
    MP4: durations count ticks of at least 1/10000 s in signed 32 bits, and H.264
    B-frames shift timestamps by two frames: down to about one frame per 15 hours.
    GIF: each frame's delay is a 16-bit count of centiseconds. ffmpeg rounds every
    timestamp to the nearest 1/100 s, so delays alternate to keep the average rate
    (16 fps: 6, 7, 6, 6, ... cs; 161 frames last 10.06 s instead of 10.0625 s). Rates
    from 100/65535 (655.35 s a frame) to 50 fps; browsers play delays below 2 cs as 10 cs.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import re
import subprocess
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Literal

from wanpy.errors import EncodeError
from wanpy.validation import check_fps

__all__ = ["DEFAULT_QUALITY", "SUPPORTED_EXTENSIONS", "Convert", "FpsLike", "MUXERS", "Plan", "check_codec",
           "check_container", "check_quality_for", "check_rate", "codec_args", "crf", "make_plan"]

DEFAULT_QUALITY = 60
"""Default of ``quality`` (VP9 crf 25, VP8 crf 28, H.264 crf 20); see the module docs."""

SUPPORTED_EXTENSIONS = (".webm", ".mp4", ".gif")

# Codecs each container accepts; the first one is the default.
_CONTAINER_CODECS: dict[str, tuple[str, ...]] = {".webm": ("vp9", "vp8"), ".mp4": ("h264",), ".gif": ("gif",)}
MUXERS = {".webm": "webm", ".mp4": "mp4", ".gif": "gif"}

# Each encoder's crf range as (best, worst); quality 100 -> best, 0 -> worst.
_CRF_RANGE = {"vp9": (0, 63), "vp8": (4, 63), "h264": (0, 51)}

# Measured on 2 cores, 832x480x161 (bench/bench_webm.py scene), "-deadline good":
# VP9 cpu-used 5 was both the fastest and the smallest (4: +17% bytes, 1: +1% bytes at
# 2.5x the time; 6 behaves as 5); -row-mt 1 with -threads 2 took 2.0 s instead of 2.8 s
# on idle cores. VP8 cpu-used 1 (one thread, 2.0 s) gave 28% fewer bytes and +0.7 dB
# over cpu-used 4 (0.75 s); cpu-used 0 saved 14% more at 2.9 s.
_VP9_SPEED = 5
_VP8_SPEED = 1

FpsLike = int | float | Fraction | numbers.Rational
Convert = Literal["clip"]


@functools.cache
def _encoders(exe: str) -> frozenset[str]:
    """Names of the video encoders ``exe`` was built with."""
    out = subprocess.run([exe, "-hide_banner", "-nostdin", "-encoders"], capture_output=True,
                         check=False).stdout.decode("utf-8", "replace")
    return frozenset(parts[1] for parts in map(str.split, out.splitlines())
                     if len(parts) >= 2 and len(parts[0]) == 6 and parts[0].startswith("V"))


def _threads() -> int:
    # ffmpeg runs libvpx-vp9 single-threaded unless told otherwise.
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 16))


def _check_quality(quality: object) -> int:
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral):
        raise TypeError(f"quality must be an int from 0 to 100, got {quality!r}")
    q = int(quality)
    if not 0 <= q <= 100:
        raise ValueError(f"quality must be between 0 and 100, got {q}")
    return q


def crf(codec: str, quality: int) -> int:
    best, worst = _CRF_RANGE[codec]
    # Integer round-half-up of worst - (worst - best) * quality / 100.
    return best + ((worst - best) * (100 - quality) + 50) // 100


def check_container(name: str, path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in _CONTAINER_CODECS:
        raise ValueError(f"{name}: unsupported video file extension {path.suffix!r} in {str(path)!r}; "
                         f"supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    return ext


def check_codec(ext: str, codec: object) -> str:
    allowed = _CONTAINER_CODECS[ext]
    if codec is None:
        return allowed[0]
    if not isinstance(codec, str):
        raise TypeError(f"codec must be a string, got {codec!r}")
    if codec.lower() not in allowed:
        raise ValueError(f"codec {codec!r} cannot be written to a {ext} file; {ext} supports: {', '.join(allowed)}")
    return codec.lower()


def check_quality_for(ext: str, quality: object) -> int | None:
    if ext == ".gif":
        if quality is not None:
            raise ValueError(f"quality does not apply to .gif (got {quality!r}); pass quality=None")
        return None
    return DEFAULT_QUALITY if quality is None else _check_quality(quality)


# --------------------------------------------------------------------------- frame rates

_RATE_TERM_MAX = 1_001_000  # av_parse_video_rate (-framerate, -r): larger terms are approximated
_INT32_MAX = 2**31 - 1


def _av_reduce(value: Fraction, limit: int) -> Fraction:
    """``value`` as libavutil's av_reduce() returns it: the nearest continued-fraction
    approximant whose numerator and denominator are at most ``limit``."""
    num, den = value.numerator, value.denominator
    if num <= limit and den <= limit:
        return value
    (p0, q0), (p1, q1) = (0, 1), (1, 0)
    while den:
        x = num // den
        if x * p1 + p0 > limit or x * q1 + q0 > limit:
            x = min((limit - p0) // p1 if p1 else x, (limit - q0) // q1 if q1 else x)
            if den * (2 * x * q1 + q0) > num * q1:  # the semi-convergent is nearer
                p1, q1 = x * p1 + p0, x * q1 + q0
            break
        (p0, q0), (p1, q1) = (p1, q1), (x * p1 + p0, x * q1 + q0)
        num, den = den, num - den * x
    return Fraction(p1, q1)


def _nearest_twelfth(fps: Fraction) -> str:
    low = Fraction(int(fps * 12), 12)
    return " or ".join(str(r) for r in (low, low + Fraction(1, 12)) if Fraction(2, 5) < r <= 5) or "5"


def _webm_rate_problem(fps: Fraction) -> str | None:
    if fps > 1000:
        return "WebM timestamps are whole milliseconds; WebM takes at most 1000 fps"
    ns = 10**9 * fps.denominator // fps.numerator  # DefaultDuration, as ffmpeg's muxer truncates it
    back = _av_reduce(Fraction(10**9, ns), 30000)  # as ffmpeg's demuxer reads it back
    if back != fps:
        return (f"WebM stores the frame duration in whole nanoseconds ({ns} ns), which reads back as {back} fps; "
                "WebM takes rates from 1/30000 to 1000 fps whose duration reads back exactly (16, 12.5, "
                "30000/1001 do)")
    # At or below 5 fps ffmpeg ignores that duration and guesses the rate from the timestamps in
    # its 5 s analysis window: exact for k/12 fps, and with fewer than 3 frames there.
    if fps <= 5 and (fps * 12).denominator != 1 and fps > Fraction(2, 5):
        return (f"at or below 5 fps ffmpeg ignores the stored duration and guesses the rate from the millisecond "
                f"timestamps, which reads {fps} back as another rate; WebM takes multiples of 1/12 fps up to 5 "
                f"(nearest: {_nearest_twelfth(fps)}) or at most 2/5 fps (one frame per 2.5 s or longer)")
    return None


def _mp4_rate_problem(fps: Fraction) -> str | None:
    scale = fps.numerator  # the mov muxer's ticks per second: the rate's numerator, doubled to >= 10000
    while scale < 10000:
        scale *= 2
    ticks = fps.denominator * (scale // fps.numerator)
    # x264's B-frames put presentation two frames after decoding; MP4 stores that offset in
    # signed 32 bits (libopenh264 has no B-frames, but the file must not depend on the encoder).
    if 2 * ticks <= _INT32_MAX:
        return None
    slowest = Fraction(fps.numerator, _INT32_MAX // 2 // (scale // fps.numerator))
    return (f"MP4 counts {ticks} ticks of 1/{scale} s per frame and H.264 B-frames shift timestamps by two "
            f"frames, beyond the signed 32-bit {_INT32_MAX}; the slowest MP4 rate with numerator "
            f"{fps.numerator} is {slowest} fps (one frame per {float(1 / slowest):.0f} s)")


def _gif_rate_problem(fps: Fraction) -> str | None:
    if fps > 50:
        return "delays are whole centiseconds and browsers slow delays below 2 cs down; use at most 50 fps"
    if fps < Fraction(100, 65535):
        return "a GIF delay is at most 65535 cs (655.35 s); GIF takes 100/65535 to 50 fps"
    return None


_RATE_PROBLEMS = {".webm": _webm_rate_problem, ".mp4": _mp4_rate_problem, ".gif": _gif_rate_problem}


def check_rate(ext: str, fps: object) -> Fraction:
    """``fps`` as the exact Fraction that ``ext`` will store, or ValueError saying why not."""
    rate = check_fps(fps)
    shown = f"{fps!r} (= {rate})" if isinstance(fps, float) else str(rate)
    if rate.numerator > _RATE_TERM_MAX or rate.denominator > _RATE_TERM_MAX:
        raise ValueError(f"fps {shown}: ffmpeg takes frame rates whose numerator and denominator are "
                         f"at most {_RATE_TERM_MAX} (it would use {_av_reduce(rate, _RATE_TERM_MAX)})")
    problem = _RATE_PROBLEMS[ext](rate)
    if problem is not None:
        raise ValueError(f"fps {shown} cannot be kept in a {ext} file: {problem}")
    return rate


def _check_convert(convert: object) -> Convert | None:
    if convert is None or convert == "clip":
        return convert
    raise ValueError(f"convert must be None or 'clip', got {convert!r}")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What an encode will write: container, codec, exact rate, quality, padding, conversion."""

    ext: str
    codec: str
    fps: Fraction
    quality: int | None
    pad: bool
    convert: Convert | None


def make_plan(name: str, path: Path, *, fps: object, codec: object, quality: object, pad: object,
              convert: object) -> Plan:
    ext = check_container(name, path)
    codec_name = check_codec(ext, codec)
    rate = check_rate(ext, fps)
    q = check_quality_for(ext, quality)
    if not isinstance(pad, bool):
        raise TypeError(f"pad must be True or False, got {pad!r}")
    return Plan(ext, codec_name, rate, q, pad, _check_convert(convert))


def codec_args(plan: Plan, exe: str) -> list[str]:
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
        return [*to_yuv, "-c:v", "libvpx-vp9", "-crf", str(crf("vp9", q)), "-b:v", "0", "-row-mt", "1",
                "-threads", str(_threads()), "-deadline", "good", "-cpu-used", str(_VP9_SPEED), *tags]
    if plan.codec == "vp8":
        if "libvpx" not in encoders:
            raise EncodeError(f"this ffmpeg ({exe}) has no libvpx (VP8) encoder")
        # VP8 has no pure constant-quality mode; -b:v 0 would mean "256 kbit/s".
        # One thread: libvpx's VP8 threads spin-wait on each other, which took 9x longer
        # (18.7 s instead of 2.1 s) when the two cores were shared with other work.
        return [*to_yuv, "-c:v", "libvpx", "-crf", str(crf("vp8", q)), "-b:v", "100M",
                "-threads", "1", "-deadline", "good", "-cpu-used", str(_VP8_SPEED), *tags]
    if plan.codec == "h264":
        common = [*tags, "-movflags", "+faststart+use_metadata_tags"]  # custom tags (metadata=) kept
        if "libx264" in encoders:
            return [*to_yuv, "-c:v", "libx264", "-crf", str(crf("h264", q)), "-preset", "medium", *common]
        if "libopenh264" in encoders:
            qp = str(crf("h264", q))
            return [*to_yuv, "-c:v", "libopenh264", "-rc_mode", "quality", "-qmin", qp, "-qmax", qp, *common]
        raise EncodeError(f"this ffmpeg ({exe}) has neither libx264 nor libopenh264 for .mp4")
    if plan.codec == "gif":
        return ["-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-c:v", "gif"]
    raise AssertionError(plan.codec)  # pragma: no cover - check_codec prevents it


_METADATA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def metadata_args(ext: str, metadata: Mapping[str, str] | None) -> list[str]:
    """ffmpeg's ``-metadata`` arguments for container tags, checked: keys are identifiers (as
    every container spells them), values text without NUL."""
    if not metadata:
        return []
    if ext == ".gif":
        raise ValueError("metadata: GIF files store no tags; write .webm or .mp4")
    args: list[str] = []
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"metadata: key {key!r} must be a letter then letters, digits or _ (at most 64)")
        if not isinstance(value, str) or "\x00" in value or "\n" in value:
            raise ValueError(f"metadata[{key!r}] must be one line of text without NUL")
        args += ["-metadata", f"{key}={value}"]
    return args
