"""Input validation, run before any native call: nothing is rounded or defaulted silently.

Every error names the offending value and, where there is one, the nearest valid ones.
"""

from __future__ import annotations

import math
import numbers
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wanpy import _core

Align = Literal["down", "up"]


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False, exclusive_maximum: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ValueError(f"{name} must be {'>' if exclusive_minimum else '>='} {minimum}, got {value}")
    if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
        raise ValueError(f"{name} must be {'<' if exclusive_maximum else '<='} {maximum}, got {value}")
    return value


def check_fps(fps: Any, *, maximum: int | None = None) -> Fraction:
    """``fps`` as an exact Fraction: rationals as given, floats as their shortest decimal
    (12.5 -> 25/2, 29.97 -> 2997/100), within ffmpeg's 32-bit rationals."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise TypeError(f"fps must be an int, float or fractions.Fraction, got {fps!r}")
    if isinstance(fps, numbers.Rational):
        value = Fraction(int(fps.numerator), int(fps.denominator))
    else:
        if not math.isfinite(float(fps)):
            raise ValueError(f"fps must be a finite number, got {fps!r}")
        value = Fraction(repr(float(fps)))
    if maximum is not None and not 0 < value <= maximum:
        raise ValueError(f"fps must be in (0, {maximum}], got {fps}")
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    if value.numerator > 2**31 - 1 or value.denominator > 2**31 - 1:
        raise ValueError(f"fps {fps!r} = {value} does not fit ffmpeg's 32-bit rational; "
                         "pass a fractions.Fraction with a smaller denominator")
    return value


# sd.cpp parses every prompt with a std::regex whose libstdc++ matcher recurses once per
# byte of plain text (src/util.cpp parse_prompt_attention): about 260 bytes of stack per
# byte, so ~25 000 bytes overflow an 8 MiB stack (SIGSEGV) and ~3 500 a 1 MiB thread stack.
MAX_TEXT_BYTES = 10_000


def check_text(name: str, value: Any, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character at index {value.index(chr(0))}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} cannot be encoded as UTF-8 ({exc.reason} at index {exc.start})") from None
    if size > max_bytes:
        raise ValueError(f"{name} is {size} bytes as UTF-8 ({len(value)} characters); at most {max_bytes} are "
                         "accepted, because sd.cpp's prompt parser overflows the stack on longer text: shorten it")
    return value


# sd.cpp's frames below the prompt parser, and Python's above it
_PARSE_STACK_MARGIN = 256 << 10


def check_parse_stack(*texts: str) -> None:
    """Refuse a prompt the calling thread's stack cannot hold while sd.cpp parses it (see
    MAX_TEXT_BYTES: a thread with a 1 MiB stack overflows at a few thousand bytes, SIGSEGV).
    Call it on the thread that will generate."""
    left = _core.thread_stack_left()
    longest = max(len(t.encode("utf-8")) for t in texts)
    need = _core.PROMPT_STACK_PER_BYTE * longest + _PARSE_STACK_MARGIN
    if 0 <= left < need:
        raise ValueError(f"a prompt of {longest} bytes needs about {need // 1024} KiB of stack for sd.cpp to parse; "
                         f"this thread has {left // 1024} KiB left: shorten the prompt, or generate from a thread "
                         f"with a larger stack (threading.stack_size({1 << need.bit_length()}) before starting it)")


def valid_frame_counts(num_frames: int) -> tuple[int, int]:
    """The 4k+1 frame counts just below and above ``num_frames``."""
    down = max(1, (num_frames - 1) // 4 * 4 + 1)
    up = down if down >= num_frames else down + 4
    return down, up


# The longest clips sd.cpp can build the Wan VAE graphs for: beyond them the graph outgrows
# ggml's compute context (a fixed number of tensors) and GGML_ASSERT(obj_new) aborts the
# process (further on, a SIGSEGV in ggml_new_graph_custom). Measured on the pinned sd.cpp with
# wanpy.preflight, which builds the same graphs; independent of width, height, tiling and
# flash attention. Wan2.1 VAE: decode 689 frames, encode 201 (Wan2.1 I2V/FLF2V and Wan2.2
# I2V encode the whole clip); Wan2.2 VAE (TI2V-5B): decode 657 (its image is one frame).
MAX_NUM_FRAMES = 657
MAX_NUM_FRAMES_BY_FAMILY = {
    "wan2.1-t2v-1.3b": 689, "wan2.1-t2v-14b": 689, "wan2.2-t2v-a14b": 689, "wan2.2-ti2v-5b": 657,
    "wan2.1-i2v-14b": 201, "wan2.1-flf2v-14b": 201, "wan2.2-i2v-a14b": 201,
}


def check_num_frames(num_frames: Any, *, align: Align | None = None, maximum: int = MAX_NUM_FRAMES) -> int:
    """sd.cpp silently rounds the frame count down to 4k+1: refuse, or align on request.

    ``maximum`` (4k+1) is the longest clip sd.cpp can build the VAE graphs for: pass the
    family's ``MAX_NUM_FRAMES_BY_FAMILY`` entry; the default holds for every family but
    the image-to-video ones (201).
    """
    n = check_int("num_frames", num_frames, minimum=1)
    if n > maximum:
        raise ValueError(f"num_frames must be <= {maximum}, got {n}: sd.cpp aborts the process when it builds "
                         "the VAE graph for a longer clip; make a longer video from clips continued from "
                         "one another (continue_from=previous) joined by wanpy.concatenate")
    if (n - 1) % 4 == 0:
        return n
    down, up = valid_frame_counts(n)
    if align == "down":
        return down
    if align == "up":
        return up
    if align is not None:
        raise ValueError(f"align must be 'down', 'up' or None, got {align!r}")
    raise ValueError(f"num_frames must be 4k+1 (Wan's VAE compresses time by 4), got {n}: "
                     f"use {down} or {up}, or pass align='down'/'up'")


def frames_for_duration(duration: Any, fps: Fraction, *, align: Align | None,
                        maximum: int = MAX_NUM_FRAMES) -> int:
    seconds = check_float("duration", duration, minimum=0, exclusive_minimum=True)
    exact = seconds * fps
    n = round(float(exact))
    if abs(float(exact) - n) > 1e-6:
        raise ValueError(f"duration={seconds} s at {fps} fps is {float(exact):.4g} frames, not a whole number")
    if n < 1:
        raise ValueError(f"duration={seconds} s at {fps} fps is less than one frame")
    if n > maximum:
        raise ValueError(f"duration={seconds} s at {fps} fps is {n} frames; at most {maximum} "
                         f"({float(maximum / fps):.4g} s) can be made at once: sd.cpp aborts the process when it "
                         "builds the VAE graph for a longer clip; continue clips from one another "
                         "(continue_from=previous) and join them with wanpy.concatenate")
    if (n - 1) % 4 == 0 or align is not None:
        return check_num_frames(n, align=align, maximum=maximum)
    down, up = valid_frame_counts(n)
    raise ValueError(f"duration={seconds} s at {fps} fps is {n} frames, not 4k+1: use {down} or {up} "
                     f"frames ({float(down / fps):.4g} s or {float(up / fps):.4g} s), or pass align='down'/'up'")


def check_size(width: Any, height: Any, multiple: int, family: str) -> tuple[int, int]:
    w = check_int("width", width, minimum=1, maximum=16384)
    h = check_int("height", height, minimum=1, maximum=16384)
    bad = [(n, v) for n, v in (("width", w), ("height", h)) if v % multiple]
    if bad:
        parts = []
        for n, v in bad:
            lo = max(multiple, v // multiple * multiple)
            parts.append(f"{n} {v} (nearest: {lo} or {lo + multiple if lo < v else lo})")
        raise ValueError(f"width and height must be multiples of {multiple} for {family}: "
                         + ", ".join(parts))
    return w, h


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return check_int("seed", seed, minimum=0, maximum=2**63 - 1)


def check_file(name: str, path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, got {type(path).__name__}")
    if "\x00" in os.fspath(path):
        raise ValueError(f"{name}: the path contains a NUL character: {os.fspath(path)!r}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such file: {str(p)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"{name}: is a directory, not a model file: {str(p)!r}")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"{name}: not readable: {str(p)!r}")
    if p.stat().st_size == 0:
        raise ValueError(f"{name}: file is empty: {str(p)!r}")
    return os.fspath(p.resolve())


def load_image(name: str, image: Any) -> np.ndarray:
    """A path, PIL image or HxWx3 uint8 array -> C-contiguous HxWx3 uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        path = Path(image)
        if "\x00" in str(path):
            raise ValueError(f"{name}: the path contains a NUL character: {str(path)!r}")
        if path.is_dir():
            raise IsADirectoryError(f"{name}: is a directory, not an image file: {str(path)!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such image file: {str(path)!r}")
        try:
            with Image.open(path) as img:
                image = img.convert("RGB") if img.mode in ("RGB", "RGBA", "L", "P") else img.copy()
        except UnidentifiedImageError:
            raise ValueError(f"{name}: not a readable image: {str(path)!r}") from None
        except PermissionError:
            raise
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
            # PIL decodes lazily: a truncated or corrupt file fails here, in convert()
            raise ValueError(f"{name}: cannot decode the image {str(path)!r} ({exc}): "
                             "is the file complete?") from None
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL image
        if image.mode != "RGB":
            raise ValueError(f"{name}: PIL image mode must be RGB, got {image.mode} (convert('RGB') it)")
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: array dtype must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: array must be HxWx3 (RGB), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: image is empty, shape {image.shape}")
    return np.ascontiguousarray(image)
