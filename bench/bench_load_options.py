"""What the load settings mmap and vae_conv_direct change, on the random-weight Wan2.1-T2V-1.3B.

mmap: one fresh process per load (alternated, the files already in the page cache), reporting
the load seconds and the process's peak RSS after loading and after one small generation.
vae_conv_direct: two pipelines (without, with) in one process, alternated, reporting sd.cpp's
VAE decode seconds at each size, the ratio direct / im2col, and the largest pixel difference.
Run it with a Vulkan build (and GGML_VK_VISIBLE_DEVICES) to measure a Vulkan device.

    python bench/bench_load_options.py [--dtype f16] [--rounds 3] [--sizes 128x128x9,256x256x17]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

import numpy as np

import wanpy
from wanpy.testing import cached_model_set

_CHILD = r"""
import json, resource, sys
import wanpy
from wanpy.testing import cached_model_set
a = json.loads(sys.argv[1])
kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype=a["dtype"], seed=0)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False, mmap=a["mmap"]) as pipe:
    loaded = rss()
    pipe.generate_video("x", width=64, height=64, num_frames=5, steps=1, seed=1, progress=False)
    print(json.dumps({"load_s": pipe.load_seconds, "rss_loaded": loaded, "rss_generated": rss()}))
"""


def _mmap_rounds(dtype: str, rounds: int) -> dict[str, Any]:
    out: dict[str, list[dict[str, float]]] = {"False": [], "True": []}
    for _ in range(rounds):
        for mmap in (False, True):
            proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps({"dtype": dtype, "mmap": mmap})],
                                  capture_output=True, text=True, check=True)
            out[str(mmap)].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {k: {m: statistics.median(r[m] for r in v) for m in ("load_s", "rss_loaded", "rss_generated")}
            for k, v in out.items()}


def _direct_rounds(dtype: str, rounds: int, sizes: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype=dtype, seed=0)
    rows = []
    with wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False) as im2col, \
            wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False, vae_conv_direct=True) as direct:
        for w, h, n in sizes:
            times: dict[str, list[float]] = {"im2col": [], "direct": []}
            frames: dict[str, np.ndarray] = {}
            for _ in range(rounds):
                for name, pipe in (("im2col", im2col), ("direct", direct)):
                    video = pipe.generate_video("x", width=w, height=h, num_frames=n, steps=1, seed=1,
                                                progress=False)
                    assert video.timings.vae_decode is not None
                    times[name].append(video.timings.vae_decode)
                    frames[name] = video.frames.astype(np.int16)
            a, b = statistics.median(times["im2col"]), statistics.median(times["direct"])
            rows.append({"size": f"{w}x{h}x{n}", "im2col_s": a, "direct_s": b, "direct_over_im2col": b / a,
                         "max_diff": int(np.abs(frames["direct"] - frames["im2col"]).max()), "runs": times})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="f16", help="the kit's DiT dtype (f16: the largest file)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="128x128x9,256x256x17")
    parser.add_argument("--skip-mmap", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    result: dict[str, Any] = {"backend": wanpy._core.BACKEND, "dtype": args.dtype, "rounds": args.rounds}
    if not args.skip_mmap:
        result["mmap"] = m = _mmap_rounds(args.dtype, args.rounds)
        print(f"mmap ({args.dtype} DiT, medians of {args.rounds}): load {m['False']['load_s']:.2f} s -> "
              f"{m['True']['load_s']:.2f} s; peak RSS loaded {m['False']['rss_loaded'] / 2**20:.0f} -> "
              f"{m['True']['rss_loaded'] / 2**20:.0f} MiB, after a generation "
              f"{m['False']['rss_generated'] / 2**20:.0f} -> {m['True']['rss_generated'] / 2**20:.0f} MiB")
    result["vae_conv_direct"] = rows = _direct_rounds(args.dtype, args.rounds, sizes)  # type: ignore[arg-type]
    for r in rows:
        print(f"vae_conv_direct on {result['backend']}, {r['size']}: VAE decode {r['im2col_s']:.2f} s -> "
              f"{r['direct_s']:.2f} s ({r['direct_over_im2col']:.3f}x), max pixel difference {r['max_diff']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
