"""Benchmark wanpy's WebM writer against stable-diffusion.cpp's "every frame a key frame" WebM.

Scene: a synthetic moving clip (drifting colour gradients, a moving texture band, a disc and
a box with anti-aliased edges), 832x480, 161 frames at 16 fps (10.0625 s), as uint8 RGB.

Rows:
  * wanpy VP9 and VP8 at the default quality (``wanpy.save_video``).
  * The baseline, sd.cpp's own WebM writer: ``create_webm_from_sd_images`` from the pinned
    sd.cpp source (examples/common/media_io.cpp, unchanged), which encodes each frame with
    libwebp's lossy ``WebPEncodeRGB(quality)`` and muxes the VP8 bitstream of each WebP as
    a key frame with libwebm. It runs as the bench-only tool ``wanpy-sdcpp-webm``
    (bench/sdcpp_webm.cpp), built by ``bench/build_sdcpp_tools.sh`` into build/bench-tools;
    the frames reach it through a raw file (uint32 LE T, H, W, then RGB bytes). Once at
    quality 90 (what sd-cli uses: create_video_from_sd_images' default) and once at the
    lowest quality whose PSNR matches wanpy's VP9 ("PSNR-matched").
  * Fallback, only when that tool is missing (or with --emulate), clearly labelled
    "EMULATED": Pillow (also libwebp, default method 4) encodes each frame, the "VP8 " chunk
    is taken out of the RIFF container and ffmpeg remuxes the chunks into WebM without
    re-encoding (``-c copy``; a different muxer and libwebp version than sd.cpp's).

PSNR is the mean over frames of the RGB PSNR between the original frames and the frames
ffmpeg decodes from each file (what a player shows). 4:2:0 chroma subsampling alone caps
it; the cap is printed too. Encode times are wall-clock and CPU seconds (this process plus
its children) and "x realtime" is video duration / wall time. For the sd.cpp tool the wall
time covers the whole process (start-up and reading the raw frames from the page cache
included); the time it spent inside create_webm_from_sd_images is reported as "writer_s".

Usage:
  bench/build_sdcpp_tools.sh            # once: builds build/bench-tools/wanpy-sdcpp-webm
  PYTHONPATH=src python bench/bench_webm.py --json results.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
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

from wanpy.encode import DEFAULT_QUALITY, save_video
from wanpy.formats import crf
from wanpy.probe import probe_video

from wanpy.testing.scenes import scene_frame

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SDCPP_WEBM = ROOT / "build" / "bench-tools" / "wanpy-sdcpp-webm"
# sd-cli writes videos with create_video_from_sd_images(path, images, n, fps), whose quality
# parameter defaults to 90 (examples/common/media_io.h); the CLI has no option to change it.
SDCPP_DEFAULT_QUALITY = 90


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
    """EMULATION of sd.cpp's create_webm_from_sd_images (fallback when the tool is missing):
    one lossy WebP key frame per frame."""
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


def write_raw_frames(frames: np.ndarray, path: Path) -> None:
    """The input format of wanpy-sdcpp-webm: uint32 LE T, H, W, then T*H*W*3 RGB bytes."""
    t, h, w, c = frames.shape
    assert c == 3 and frames.dtype == np.uint8
    with path.open("wb") as f:
        f.write(struct.pack("<III", t, h, w))
        f.write(np.ascontiguousarray(frames).tobytes())


def run_sdcpp_webm(tool: Path, raw: Path, fps: int, quality: int, out: Path) -> float:
    """sd.cpp's create_webm_from_sd_images on the raw frames; returns its own time (s)."""
    proc = subprocess.run([str(tool), str(raw), str(out), str(fps), str(quality)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    found = re.search(r"in ([0-9.]+) s\s*$", proc.stderr)
    return float(found.group(1)) if found else float("nan")


def sdcpp_source() -> str:
    record = ROOT / "extern" / "stable-diffusion.cpp" / "WANPY_SOURCE.json"
    try:
        info = json.loads(record.read_text())
        return f"{info['package']}=={info['version']} sdist (sha256 {info['sha256'][:12]})"
    except (OSError, ValueError, KeyError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=161)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    parser.add_argument("--sdcpp-webm", type=Path, default=None,
                        help="sd.cpp WebM writer tool (default: build/bench-tools/wanpy-sdcpp-webm, "
                             "built by bench/build_sdcpp_tools.sh)")
    parser.add_argument("--emulate", action="store_true",
                        help="use the Pillow emulation of sd.cpp's writer even if the tool exists")
    args = parser.parse_args()

    tool: Path | None = None
    if not args.emulate:
        candidate = args.sdcpp_webm or DEFAULT_SDCPP_WEBM
        if candidate.is_file() and os.access(candidate, os.X_OK):
            tool = candidate.resolve()
        elif args.sdcpp_webm is not None:
            parser.error(f"--sdcpp-webm {args.sdcpp_webm}: not an executable file")
        else:
            print(f"WARNING: {candidate} not found (run bench/build_sdcpp_tools.sh); the "
                  f"baseline is an EMULATION of sd.cpp's WebM writer (Pillow WebP per frame)",
                  file=sys.stderr, flush=True)
    label = "sd.cpp WebM" if tool else "EMULATED sd.cpp-like WebP"

    w, h, n, fps = args.width, args.height, args.frames, args.fps
    seconds = n / fps
    frames = np.stack([scene_frame(t, h, w, n) for t in range(n)])
    rows = []

    with tempfile.TemporaryDirectory(prefix="bench_webm_") as tmp:
        tmpdir = Path(tmp)
        raw = tmpdir / "frames.raw"
        if tool:
            write_raw_frames(frames, raw)

        def measure(name: str, encode, **extra: object) -> dict:
            out = tmpdir / f"{name.replace(' ', '_')}.webm"
            with Clock() as clock:
                inner = encode(out)
            info = probe_video(out)
            assert info.frame_count == n, (name, info.frame_count)
            row = {"name": name, "bytes": out.stat().st_size, "encode_wall_s": clock.wall,
                   "encode_cpu_s": clock.cpu, "x_realtime": seconds / clock.wall,
                   "psnr_db": mean_psnr(frames, decode(out, h, w)), "frames": info.frame_count,
                   "duration_s": info.duration, "codec": info.codec, **extra}
            if isinstance(inner, float):  # the sd.cpp tool's own timing
                row["writer_s"] = inner
                row["writer_x_realtime"] = seconds / inner
            out.unlink()
            print(f"  {name}: {row['bytes']} bytes, {row['psnr_db']:.2f} dB, "
                  f"{row['encode_wall_s']:.2f} s", file=sys.stderr, flush=True)
            return row

        def baseline(out: Path, quality: int) -> float | None:
            if tool:
                return run_sdcpp_webm(tool, raw, fps, quality, out)
            write_all_key_webp_webm(frames, fps, quality, out)
            return None

        for codec in ("vp9", "vp8"):
            rows.append(measure(
                f"wanpy {codec} q{args.quality}",
                lambda out, codec=codec: save_video(out, frames, fps=fps, codec=codec,
                                                    quality=args.quality),
                kind="wanpy", crf=crf(codec, args.quality)))
        ours = rows[0]

        cache: dict[int, dict] = {}

        def at(q: int) -> dict:
            if q not in cache:
                cache[q] = measure(f"{label} q{q}", lambda out: baseline(out, q),
                                   kind="baseline", webp_quality=q, emulated=tool is None)
            return cache[q]

        default = dict(at(SDCPP_DEFAULT_QUALITY))
        default["name"] += " (sd-cli default)"
        rows.append(default)

        # Lowest WebP quality whose PSNR reaches wanpy VP9's (PSNR rises with quality).
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
        if matched["webp_quality"] != SDCPP_DEFAULT_QUALITY:
            rows.append(matched)

        ceiling = {m: chroma_ceiling(frames, m) for m in ("bt709", "bt601")}

    for row in rows:
        row["bytes_vs_matched_baseline"] = row["bytes"] / matched["bytes"]
        row["bytes_vs_default_baseline"] = row["bytes"] / default["bytes"]

    print(f"\n{n} frames {w}x{h} at {fps} fps ({seconds:.4f} s of video); 4:2:0 PSNR ceiling "
          f"{ceiling['bt709']:.2f} dB (BT.709) / {ceiling['bt601']:.2f} dB (BT.601)")
    if tool:
        print(f"baseline: sd.cpp's own create_webm_from_sd_images ({tool}; {sdcpp_source()})")
    else:
        print("baseline: EMULATION of sd.cpp's writer (Pillow WebP per frame, ffmpeg remux); "
              "build the real one with bench/build_sdcpp_tools.sh")
    header = (f"{'encoder':50s} {'bytes':>10s} {'/match':>7s} {'/q90':>6s} {'PSNR dB':>8s} "
              f"{'wall s':>7s} {'cpu s':>7s} {'x realtime':>10s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['name']:50s} {row['bytes']:10d} {row['bytes_vs_matched_baseline']:7.3f} "
              f"{row['bytes_vs_default_baseline']:6.3f} {row['psnr_db']:8.2f} "
              f"{row['encode_wall_s']:7.2f} {row['encode_cpu_s']:7.2f} {row['x_realtime']:10.2f}")
    print(f"/match = bytes / bytes of the PSNR-matched baseline ({label} q{matched['webp_quality']}, "
          f"{matched['psnr_db']:.2f} dB vs wanpy VP9 {ours['psnr_db']:.2f} dB); "
          f"/q90 = bytes / bytes of the baseline at sd-cli's default quality")
    if tool:
        print("sd.cpp wall s = whole tool process; inside create_webm_from_sd_images: " + ", ".join(
            f"q{r['webp_quality']} {r['writer_s']:.2f} s ({r['writer_x_realtime']:.2f}x realtime)"
            for r in rows if r["kind"] == "baseline"))

    if args.json:
        if tool:
            method = (f"sd.cpp's create_webm_from_sd_images (pinned {sdcpp_source()}, "
                      "examples/common/media_io.cpp) via bench/sdcpp_webm.cpp: libwebp lossy "
                      "per frame, muxed by libwebm, every frame a key frame")
        else:
            method = ("EMULATED: Pillow libwebp lossy per frame, VP8 chunk remuxed into WebM "
                      "by ffmpeg -c copy (every frame a key frame)")
        result = {
            "scene": "synthetic gradients + moving texture band, disc and box",
            "width": w, "height": h, "frames": n, "fps": fps, "video_seconds": seconds,
            "quality": args.quality, "chroma_ceiling_psnr_db": ceiling,
            "baseline_method": method, "baseline_emulated": tool is None,
            "baseline_tool": str(tool) if tool else None,
            "sdcpp_default_quality": SDCPP_DEFAULT_QUALITY,
            "psnr": "mean over frames of RGB PSNR, decoded by ffmpeg",
            "ffmpeg": FFMPEG, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "rows": rows,
            "webp_quality_search": sorted((q, r["psnr_db"], r["bytes"]) for q, r in cache.items()),
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
