"""Frame interpolation (``Video.interpolate``, ffmpeg's minterpolate) against frame blending and frame
duplication, on the synthetic moving scene rendered at the doubled rate: the in-between frames are
compared with the true ones (PSNR, RGB), all three in one run, at a slow and a fast motion.

    python bench/bench_interpolate.py [--size 832x480] [--frames 33] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction

import numpy as np

import wanpy
from wanpy.testing.scenes import scene_frame


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run(width: int, height: int, frames: int, period: int) -> dict[str, float]:
    """``frames`` at 16 fps of a scene whose motion repeats every ``period`` frames at 32 fps."""
    truth = np.stack([scene_frame(i, height, width, period) for i in range(2 * frames - 1)])
    video = wanpy.Video(frames=truth[::2], fps=Fraction(16), seed=0)
    started = time.perf_counter()
    smooth = video.interpolate(32)
    seconds = time.perf_counter() - started
    between = truth[1::2]
    blend = ((video.frames[:-1].astype(np.uint16) + video.frames[1:]) // 2).astype(np.uint8)
    return {"minterpolate_db": psnr(smooth.frames[1::2], between), "blend_db": psnr(blend, between),
            "duplicate_db": psnr(video.frames[:-1], between), "input_frames_db": psnr(smooth.frames[::2], video.frames),
            "seconds": seconds, "frames_out": int(smooth.num_frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="832x480")
    parser.add_argument("--frames", type=int, default=33, help="input frames at 16 fps")
    parser.add_argument("--json")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    results = {}
    for label, period in (("slow motion (period 322)", 322), ("fast motion (period 64)", 64)):
        results[label] = run(width, height, args.frames, period)
    print(f"{args.frames} frames {width}x{height} at 16 fps -> 32 fps; PSNR of the in-between frames, dB")
    print(f"{'scene':<26} {'minterpolate':>12} {'blend':>7} {'duplicate':>9} {'inputs kept':>11} {'seconds':>8}")
    for label, r in results.items():
        print(f"{label:<26} {r['minterpolate_db']:>12.2f} {r['blend_db']:>7.2f} {r['duplicate_db']:>9.2f} "
              f"{r['input_frames_db']:>11.2f} {r['seconds']:>8.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"size": [width, height], "frames": args.frames, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
