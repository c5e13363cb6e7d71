"""Input validation, run before any native call: nothing is rounded or defaulted silently.

Every error names the offending value and, where there is one, the nearest valid ones.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from wanpy import _core

Align = Literal["down", "up"]


def check_bool(name: str, value: Any) -> bool:
    """True or False (numpy's bools too): a truthy string or number is not a flag."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_short(number)}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {_short(number)}")
    return number


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False, exclusive_maximum: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = _to_float(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
        raise ValueError(f"{name} must be {'>' if exclusive_minimum else '>='} {minimum}, got {number}")
    if maximum is not None and (number >= maximum if exclusive_maximum else number > maximum):
        raise ValueError(f"{name} must be {'<' if exclusive_maximum else '<='} {maximum}, got {number}")
    return number


def _to_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large: {_short(value)} does not fit a float") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def check_fps(fps: Any, *, maximum: int | None = None) -> Fraction:
    """``fps`` as an exact Fraction: rationals as given, floats as their shortest decimal
    (12.5 -> 25/2, 29.97 -> 2997/100), within ffmpeg's 32-bit rationals."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise TypeError(f"fps must be an int, float or fractions.Fraction, got {fps!r}")
    if isinstance(fps, numbers.Rational):
        value = Fraction(int(fps.numerator), int(fps.denominator))
    else:
        as_float = _to_float("fps", fps)
        if not math.isfinite(as_float):
            raise ValueError(f"fps must be a finite number, got {fps!r}")
        value = Fraction(repr(as_float))
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


def check_num_frames(num_frames: Any, *, align: Align | None = None, maximum: int) -> int:
    """sd.cpp silently rounds the frame count down to 4k+1: refuse, or align on request.

    ``maximum`` (4k+1) is the longest clip sd.cpp can build the VAE graphs for
    (``wanpy.catalogue``: ``WanFamily.longest_clip``).
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


def frames_for_duration(duration: Any, fps: Fraction, *, align: Align | None, maximum: int) -> int:
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


# sd.cpp's VAE tiler takes tiles of at least 4 latent pixels (smaller ones silently become 32) and
# at most the latent's size (larger ones are cut to it); it clamps the tiles' overlap to 0.5
MIN_TILE = 4
MAX_TILE_OVERLAP = 0.5


def check_tiles(tile_size: Any, tile_overlap: Any, *, vae_tiling: bool, width: int, height: int,
                spatial_scale: int, tiling_may_follow: bool = False) -> tuple[tuple[int, int] | None, float]:
    """(tile_size, tile_overlap) as sd.cpp will use them, or a ValueError: a tile size needs
    ``vae_tiling`` (sd.cpp ignores it otherwise) unless ``tiling_may_follow`` (fit="auto" may
    turn tiling on)."""
    overlap = check_float("tile_overlap", tile_overlap, minimum=0, maximum=MAX_TILE_OVERLAP)
    if tile_size is None:
        return None, overlap
    if isinstance(tile_size, (str, bytes)) or not isinstance(tile_size, Sequence) or len(tile_size) != 2:
        raise ValueError(f"tile_size must be (x, y) in latent pixels, got {tile_size!r}")
    out = []
    for axis, (label, pixels) in enumerate((("width", width), ("height", height))):
        latent = pixels // spatial_scale
        out.append(check_int(f"tile_size[{axis}]", tile_size[axis], minimum=MIN_TILE, maximum=max(MIN_TILE, latent)))
        if latent < MIN_TILE:
            raise ValueError(f"tile_size: the latent {label} is {latent} ({label} {pixels} / {spatial_scale}), "
                             f"less than the smallest tile sd.cpp makes ({MIN_TILE}): use vae_tiling=False")
    if not vae_tiling and not tiling_may_follow:
        raise ValueError(f"tile_size={tile_size!r} needs vae_tiling=True (without tiling sd.cpp would ignore it)")
    return (out[0], out[1]), overlap


# sd.cpp's preview modes: a linear projection of the latents to RGB (cheap, at latent resolution), a
# VAE decode (full resolution, a decode per preview) or the tiny decoder's (a pipeline's tiny_vae)
PREVIEW_MODES = ("proj", "vae", "tae")
TINY_VAE_USES = ("decode", "preview")


def check_preview(preview: Any) -> str | None:
    """None or a preview mode ("tae" needs a pipeline with a tiny_vae: the pipeline checks that)."""
    if preview is None or preview in PREVIEW_MODES:
        return preview  # type: ignore[no-any-return]
    raise ValueError(f"preview must be None or one of {', '.join(map(repr, PREVIEW_MODES))}, got {preview!r}")


def check_tiny_vae_use(use: Any) -> str:
    """What a tiny VAE is loaded for: "decode" (instead of the VAE) or "preview" (previews only)."""
    if use not in TINY_VAE_USES:
        raise ValueError(f"tiny_vae_use must be one of {', '.join(map(repr, TINY_VAE_USES))}, got {use!r}")
    return use  # type: ignore[no-any-return]


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return check_int("seed", seed, minimum=0, maximum=2**63 - 1)


def check_file(name: str, path: Any) -> str:
    """A model or LoRA file sd.cpp can open: a readable, non-empty regular file whose path is
    UTF-8 (sd.cpp takes its paths as UTF-8 text). Returns the resolved path."""
    from wanpy.paths import check_input_file

    resolved = check_input_file(name, path)
    try:
        resolved.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: the path {resolved!r} is not valid UTF-8, which sd.cpp needs for file names: "
                         "rename the file") from None
    return resolved


# PIL modes converted to RGB without losing anything; others (alpha, CMYK, 16-bit...) are refused
_LOSSLESS_TO_RGB = ("RGB", "L", "P")


def _pil_to_array(name: str, image: Any, origin: str) -> np.ndarray:
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        mode = "P with transparency"
    if mode not in _LOSSLESS_TO_RGB:
        raise ValueError(f"{name}: PIL image mode must be RGB, got {mode} (convert('RGB') it), in {origin}; greyscale "
                         "(L) and opaque palettes (P) are converted losslessly; flatten an alpha channel onto a "
                         "background first, or its transparent pixels reach the model as whatever colour they hold")
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def load_image(name: str, image: Any) -> np.ndarray:
    """A path, PIL image or HxWx3 uint8 array -> C-contiguous HxWx3 uint8 array.

    Paths and PIL images follow one rule: RGB as is, greyscale and opaque palettes converted
    to RGB (lossless); an alpha channel or any other mode is refused."""
    if isinstance(image, np.ndarray):  # before the PIL test: a memmap has a .mode too
        array = image
    elif isinstance(image, (str, os.PathLike)):
        array = _read_image(name, image)
    elif hasattr(image, "mode") and hasattr(image, "size") and hasattr(image, "convert"):  # PIL image
        array = _pil_to_array(name, image, "the PIL image")
    else:
        raise TypeError(f"{name} must be a path, a PIL image or a numpy array, got {type(image).__name__}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: array dtype must be uint8, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name}: array must be HxWx3 (RGB), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: image is empty, shape {array.shape}")
    return np.ascontiguousarray(array)


def _read_image(name: str, path: str | os.PathLike[str]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from wanpy.paths import check_input_file

    where = check_input_file(name, path, what="image file")
    try:
        with Image.open(where) as img:
            return _pil_to_array(name, img, f"the image {where!r}")
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not a readable image: {where!r}") from None
    except PermissionError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL decodes lazily: a truncated or corrupt file fails here, in convert()
        raise ValueError(f"{name}: cannot decode the image {where!r} ({exc}): is the file complete?") from None


def load_video(name: str, video: Any, *, num_frames: int, width: int,
               height: int) -> tuple[np.ndarray, str]:
    """A ``wanpy.Video``, a uint8 (T, H, W, 3) array or a video file (decoded by ffmpeg) -> a
    C-contiguous (T, H, W, 3) uint8 array of exactly ``num_frames`` frames of ``width`` x ``height``,
    and where it came from ("Video", "array" or the file's path). Nothing is cut, padded or resized:
    a mismatch is a ValueError naming what was given and what the video needs."""
    from wanpy.video import Video

    if isinstance(video, Video):
        array, source = video.frames, "Video"
    elif isinstance(video, np.ndarray):
        array, source = video, "array"
    elif isinstance(video, (str, os.PathLike)):
        from wanpy.probe import read_frames

        array, source = read_frames(video, name=name, max_frames=num_frames), os.fspath(video)
        if len(array) > num_frames:  # decoding stopped one frame past what the video needs
            raise ValueError(f"{name} has more than {num_frames} frames but the video has {num_frames} "
                             "(num_frames): give exactly one control frame per frame (wanpy does not cut or pad)")
    else:
        raise TypeError(f"{name} must be a wanpy.Video, a uint8 (T, H, W, 3) numpy array or a video file path, "
                        f"got {type(video).__name__}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: array dtype must be uint8, got {array.dtype}")
    if array.ndim != 4 or array.shape[3] != 3:
        raise ValueError(f"{name}: array must be (T, H, W, 3) RGB frames, got shape {array.shape}")
    _check_video_shape(name, array.shape[:3], num_frames, width, height)
    return np.ascontiguousarray(array), source


def _check_video_shape(name: str, shape: tuple[int, ...], num_frames: int, width: int, height: int) -> None:
    frames, h, w = shape
    if frames != num_frames:
        raise ValueError(f"{name} has {frames} frames but the video has {num_frames} (num_frames): give exactly "
                         f"one control frame per frame (wanpy does not cut or pad)")
    if (w, h) != (width, height):
        raise ValueError(f"{name} is {w}x{h} but the video is {width}x{height}: resize it first "
                         "(wanpy does not resize silently)")


def check_max_vram(max_vram: Any, *, offload_to_cpu: bool, is_cpu: bool) -> int | None:
    """A ``max_vram`` budget in bytes (an int or "6GiB"), None for none. sd.cpp applies it only to
    weights kept in RAM (``offload_to_cpu=True``) on a device that is not the CPU, and holds it as a
    float number of GiB: a budget that float cannot hold exactly is refused (nothing is rounded)."""
    if max_vram is None:
        return None
    from wanpy.units import parse_bytes

    try:
        budget = parse_bytes(max_vram)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"max_vram: {exc}") from None
    if not offload_to_cpu:
        raise ValueError(f"max_vram={max_vram!r} needs offload_to_cpu=True: sd.cpp streams the weights from RAM to "
                         "the device segment by segment, and without offloading it ignores the budget")
    if is_cpu:
        raise ValueError(f"max_vram={max_vram!r} budgets a GPU's memory; on the CPU sd.cpp ignores it (the weights "
                         "are already in RAM)")
    if float(np.float32(budget / 2**30)) * 2**30 != budget:
        raise ValueError(f"max_vram={max_vram!r}: sd.cpp holds the budget as a float number of GiB, which cannot "
                         f"hold {budget:,} bytes exactly; give a whole number of MiB (e.g. {budget // 2**20}MiB)")
    return budget
