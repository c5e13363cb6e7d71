"""Smoother or slower motion with no new model: motion-compensated frame interpolation with the
ffmpeg that imageio-ffmpeg ships (its ``minterpolate`` filter).

The output spans exactly the input's time: N frames at ``fps`` become
``floor((N - 1) * new_fps / fps) + 1`` frames at ``new_fps``; the first is the input's first, and
when ``new_fps`` is a multiple of ``fps`` every input frame's time has an output frame.
"""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction

import numpy as np

from wanpy.errors import EncodeError
from wanpy.probe import ffmpeg_exe
from wanpy.validation import check_fps

__all__ = ["interpolate_frames", "interpolated_count"]

# mci: motion-compensated; aobmc: overlapped blocks; bidir: motion searched both ways; vsbmc:
# variable-size blocks (ffmpeg's best-quality settings for minterpolate)
_FILTER = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"


def interpolated_count(num_frames: int, fps: Fraction, new_fps: Fraction) -> int:
    """Frames at ``new_fps`` that span the time of ``num_frames`` frames at ``fps``."""
    return math.floor((num_frames - 1) * new_fps / fps) + 1


def interpolate_frames(frames: np.ndarray, fps: Fraction, new_fps: float | Fraction) -> tuple[np.ndarray, Fraction]:
    """``frames`` (uint8 (T, H, W, 3) at ``fps``) at ``new_fps``, in-between frames made by motion
    compensation; returns (frames, the exact new fps)."""
    target = check_fps(new_fps, maximum=1000)
    if target <= fps:
        raise ValueError(f"new fps {target} must be above the video's {fps} (interpolation adds frames)")
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    count, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
    if count < 2:
        raise ValueError(f"interpolation needs at least 2 frames, the video has {count}")
    want = interpolated_count(count, fps, target)
    # minterpolate stops one input frame short of the end: the last frame, repeated, carries it there
    padded = np.concatenate([frames, frames[-1:], frames[-1:]])
    out = _run_ffmpeg(np.ascontiguousarray(padded), fps, target, want)
    return out.reshape(want, height, width, 3), target


def _run_ffmpeg(frames: np.ndarray, fps: Fraction, target: Fraction, want: int) -> np.ndarray:
    height, width = frames.shape[1], frames.shape[2]
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "pipe:0",
           # 4:4:4 around the filter: minterpolate takes YUV, and 4:2:0 would halve the colour resolution
           "-vf", f"format=yuv444p,{_FILTER.format(fps=target)},format=rgb24",
           "-fps_mode", "passthrough", "-frames:v", str(want), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    # communicate() writes and reads at once: no pipe can fill up and block both sides
    result = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=False)
    data, err = result.stdout, result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        raise EncodeError(f"ffmpeg's minterpolate failed: {err.strip()[-500:]}", ffmpeg_message=err)
    frame_bytes = height * width * 3
    if len(data) != want * frame_bytes:
        raise EncodeError(f"ffmpeg's minterpolate gave {len(data) // frame_bytes} frames, {want} were due",
                          ffmpeg_message=err)
    return np.frombuffer(data, np.uint8)
