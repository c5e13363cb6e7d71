"""Benchmark wanpy's WebM writer against stable-diffusion.cpp's "every frame a key frame" WebM.

Scene: a synthetic moving clip (drifting colour gradients, a moving texture band, a disc and
a box with anti-aliased edges), 832x480, 161 frames at 16 fps (10.0625 s), as uint8 RGB.

Rows:
  * wanpy VP9 and VP8 at the default quality (``wanpy.video_io.write_webm``).
  * The sd.cpp baseline, emulated faithfully: sd.cpp's writer
    (examples/common/media_io.cpp) encodes each frame with libwebp's lossy
    ``WebPEncodeRGB(quality)`` and muxes the VP8 bitstream of each WebP as a key frame.
    Here Pillow (also libwebp, default method 4) encodes each frame, the "VP8 " chunk is
    taken out of the RIFF container, and ffmpeg remuxes the chunks into WebM without
    re-encoding (``-c copy``; the muxer differs from sd.cpp's libwebm, which changes only
    a few bytes of overhead per frame). Once at quality 90 (sd.cpp's default) and once at
    the lowest WebP quality whose PSNR matches wanpy's VP9 ("matched").

PSNR is the mean over frames of the RGB PSNR between the original frames and the frames
ffmpeg decodes from each file (what a player shows). 4:2:0 chroma subsampling alone caps
it; the cap is printed too. Encode times are wall-clock and CPU seconds (this process plus
its children) and "x realtime" is video duration / wall time.

Usage: PYTHONPATH=src python bench/bench_webm.py --json results.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from wanpy.video_io import DEFAULT_QUALITY, _crf, probe_video, write_webm

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def scene_frame(t: int, height: int, width: int, n: int = 161) -> np.ndarray:
    """Frame t of the synthetic moving scene (same as tests/test_video_io.py)."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    yp = np.arange(height, dtype=np.float32)[:, None]
    xp = np.arange(width, dtype=np.float32)[None, :]
    ph = np.float32(t / n)
    aspect = np.float32(height / width)
    r = 0.5 + 0.4 * np.sin(2 * np.pi * (x + ph))
    g = 0.5 + 0.4 * np.cos(2 * np.pi * (0.8 * y - ph))
    b = 0.3 + 0.4 * x * y + 0.2 * ph
    img = np.stack(np.broadcast_arrays(r, g, b), axis=-1)
    tex = 0.5 + 0.5 * np.sin(2 * np.pi * (xp - 0.3 * width * ph) / 16) * np.sin(2 * np.pi * yp / 12)
    band = ((y > 0.7) & (y < 0.9)).astype(np.float32)[..., None]
    tint = np.array([0.9, 0.8, 0.5], np.float32)
    img = img * (1 - 0.6 * band) + 0.6 * band * tex[..., None] * tint

    def soft(dist: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - dist * width / 1.5, 0, 1)[..., None]

    cx, cy = 0.2 + 0.6 * ph, 0.45 + 0.2 * np.sin(2 * np.pi * ph)
    disc = soft(np.sqrt((x - cx) ** 2 + ((y - cy) * aspect) ** 2) - 0.12)
    img = img * (1 - disc) + disc * np.array([0.95, 0.25, 0.1], np.float32)
    box = soft(np.maximum(np.abs(x - (0.8 - 0.6 * ph)) - 0.05, np.abs(y - 0.2) * aspect - 0.06))
    img = img * (1 - box) + box * np.array([0.1, 0.3, 0.9], np.float32)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def mean_psnr(ref: np.ndarray, test: np.ndarray) -> float:
    assert ref.shape == test.shape, (ref.shape, test.shape)
    values = []
    for a, b in zip(ref, test, strict=True):
        mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2, dtype=np.float64)
        values.append(10 * np.log10(255.0**2 / mse) if mse else 100.0)
    return float(np.mean(values))


def decode(path: Path, height: int, width: int) -> np.ndarray:
    raw = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:v:0",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def chroma_ceiling(frames: np.ndarray, matrix: str) -> float:
    """PSNR of a bare RGB -> yuv420p -> RGB round trip (no codec)."""
    t, h, w, _ = frames.shape
    common = [FFMPEG, "-nostdin", "-v", "error", "-f", "rawvideo", "-s", f"{w}x{h}"]
    yuv = subprocess.run([*common, "-pix_fmt", "rgb24", "-i", "-", "-vf",
                          f"scale=out_color_matrix={matrix}:out_range=tv,format=yuv420p",
                          "-f", "rawvideo", "-"], input=frames.tobytes(), capture_output=True,
                         check=True).stdout
    rgb = subprocess.run([*common, "-pix_fmt", "yuv420p", "-i", "-", "-vf",
                          f"scale=in_color_matrix={matrix}:in_range=tv,format=rgb24",
                          "-f", "rawvideo", "-"], input=yuv, capture_output=True, check=True).stdout
    return mean_psnr(frames, np.frombuffer(rgb, np.uint8).reshape(t, h, w, 3))


class Clock:
    """Wall and CPU time (this process and its finished children)."""

    def __enter__(self) -> Clock:
        self._wall = time.perf_counter()
        self._cpu = self._cpu_now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = self._cpu_now() - self._cpu

    @staticmethod
    def _cpu_now() -> float:
        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total


def vp8_chunk(webp: bytes) -> bytes:
    """The 'VP8 ' chunk payload of a lossy WebP file (what sd.cpp muxes into WebM)."""
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    offset = 12
    while offset + 8 <= len(webp):
        tag, size = webp[offset:offset + 4], struct.unpack("<I", webp[offset + 4:offset + 8])[0]
        if tag == b"VP8 ":
            return webp[offset + 8:offset + 8 + size]
        offset += 8 + size + (size & 1)
    raise ValueError("no VP8 chunk (lossless or animated WebP?)")


def write_all_key_webp_webm(frames: np.ndarray, fps: int, quality: int, out: Path) -> None:
    """Emulate sd.cpp's create_webm_from_sd_images: one lossy WebP key frame per frame."""
    t, h, w, _ = frames.shape
    ivf = bytearray(struct.pack("<4sHH4sHHIIII", b"DKIF", 0, 32, b"VP80", w, h, fps, 1, t, 0))
    for i, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="WEBP", quality=quality, method=4)
        data = vp8_chunk(buf.getvalue())
        ivf += struct.pack("<IQ", len(data), i) + data
    with tempfile.NamedTemporaryFile(suffix=".ivf", dir=out.parent, delete=False) as f:
        f.write(ivf)
    try:
        subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", f"file:{f.name}", "-c", "copy",
                        "-f", "webm", "-y", f"file:{out}"], check=True)
    finally:
        os.unlink(f.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=161)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    args = parser.parse_args()

    w, h, n, fps = args.width, args.height, args.frames, args.fps
    seconds = n / fps
    frames = np.stack([scene_frame(t, h, w, n) for t in range(n)])
    rows = []

    with tempfile.TemporaryDirectory(prefix="bench_webm_") as tmp:
        tmpdir = Path(tmp)

        def measure(name: str, encode, **extra: object) -> dict:
            out = tmpdir / f"{name.replace(' ', '_')}.webm"
            with Clock() as clock:
                encode(out)
            info = probe_video(out)
            assert info.frame_count == n, (name, info.frame_count)
            row = {"name": name, "bytes": out.stat().st_size, "encode_wall_s": clock.wall,
                   "encode_cpu_s": clock.cpu, "x_realtime": seconds / clock.wall,
                   "psnr_db": mean_psnr(frames, decode(out, h, w)), "frames": info.frame_count,
                   "duration_s": info.duration, "codec": info.codec, **extra}
            out.unlink()
            print(f"  {name}: {row['bytes']} bytes, {row['psnr_db']:.2f} dB, "
                  f"{row['encode_wall_s']:.2f} s", file=sys.stderr, flush=True)
            return row

        for codec in ("vp9", "vp8"):
            rows.append(measure(
                f"wanpy {codec} q{args.quality}",
                lambda out, codec=codec: write_webm(out, frames, fps=fps, codec=codec,
                                                    quality=args.quality),
                kind="wanpy", crf=_crf(codec, args.quality)))
        ours = rows[0]

        baseline_q90 = measure("sd.cpp-like all-key WebP q90",
                               lambda out: write_all_key_webp_webm(frames, fps, 90, out),
                               kind="baseline", webp_quality=90)
        rows.append(baseline_q90)

        # Lowest WebP quality whose PSNR reaches wanpy VP9's (PSNR rises with quality).
        cache: dict[int, dict] = {90: baseline_q90}

        def at(q: int) -> dict:
            if q not in cache:
                cache[q] = measure(f"sd.cpp-like all-key WebP q{q}",
                                   lambda out: write_all_key_webp_webm(frames, fps, q, out),
                                   kind="baseline", webp_quality=q)
            return cache[q]

        lo, hi = 0, 100
        if at(hi)["psnr_db"] < ours["psnr_db"]:
            matched = at(hi)
        else:
            while lo < hi:
                mid = (lo + hi) // 2
                if at(mid)["psnr_db"] >= ours["psnr_db"]:
                    hi = mid
                else:
                    lo = mid + 1
            matched = at(hi)
        matched = dict(matched, name=matched["name"] + " (PSNR-matched)")
        if matched["webp_quality"] != 90:
            rows.append(matched)

        ceiling = {m: chroma_ceiling(frames, m) for m in ("bt709", "bt601")}

    for row in rows:
        row["bytes_vs_matched_baseline"] = row["bytes"] / matched["bytes"]

    print(f"\n{n} frames {w}x{h} at {fps} fps ({seconds:.4f} s of video); 4:2:0 PSNR ceiling "
          f"{ceiling['bt709']:.2f} dB (BT.709) / {ceiling['bt601']:.2f} dB (BT.601)")
    header = (f"{'encoder':44s} {'bytes':>10s} {'ratio':>6s} {'PSNR dB':>8s} {'wall s':>7s} "
              f"{'cpu s':>7s} {'x realtime':>10s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['name']:44s} {row['bytes']:10d} {row['bytes_vs_matched_baseline']:6.3f} "
              f"{row['psnr_db']:8.2f} {row['encode_wall_s']:7.2f} {row['encode_cpu_s']:7.2f} "
              f"{row['x_realtime']:10.2f}")
    print(f"ratio = bytes / bytes of the PSNR-matched all-key baseline "
          f"(WebP q{matched['webp_quality']}, {matched['psnr_db']:.2f} dB vs wanpy VP9 "
          f"{ours['psnr_db']:.2f} dB)")

    if args.json:
        result = {
            "scene": "synthetic gradients + moving texture band, disc and box",
            "width": w, "height": h, "frames": n, "fps": fps, "video_seconds": seconds,
            "quality": args.quality, "chroma_ceiling_psnr_db": ceiling,
            "baseline_method": "Pillow libwebp lossy per frame, VP8 chunk remuxed into WebM "
                               "by ffmpeg -c copy (every frame a key frame)",
            "psnr": "mean over frames of RGB PSNR, decoded by ffmpeg",
            "ffmpeg": FFMPEG, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "rows": rows,
            "webp_quality_search": sorted((q, r["psnr_db"], r["bytes"]) for q, r in cache.items()),
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
