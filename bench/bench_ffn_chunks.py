"""What computing the Wan DiT's feed-forward block in token chunks costs (patch 0007, issue #25).

One pipeline on the random-weight Wan2.1-T2V-1.3B; at each size, every setting of
WANPY_FFN_CHUNKS in turn, the order rotated each round, so that the settings share the machine's
state: "auto" (no variable: the graph the device's ceiling asks for; with no ceiling, upstream's),
"1" (never chunk) and forced chunk counts. Reports sd.cpp's sampling seconds per step (median of
the rounds), each setting's ratio to unchunked in the same run, the DiT compute buffer sd.cpp
logs, and the largest pixel difference to the unchunked frames. Run it with a Vulkan build (and
GGML_VK_VISIBLE_DEVICES) to measure a Vulkan device, or a CUDA build for a GPU.

    python bench/bench_ffn_chunks.py [--dtype q4_0] [--rounds 3] [--sizes 128x128x17,256x256x17]
        [--chunks 2,4] [--steps 3] [--flash-attention] [--keep-vae-on-cpu] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

import numpy as np

import wanpy
from wanpy import _logging
from wanpy.testing import cached_model_set
from wanpy.testing.sdcpp_logs import compute_buffers

ENV = "WANPY_FFN_CHUNKS"


def _run(pipe: wanpy.WanPipeline, setting: str, size: tuple[int, int, int], steps: int) -> dict[str, Any]:
    if setting == "auto":
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = setting
    lines: list[str] = []
    w, h, n = size
    with _logging.observe(lambda source, level, text: lines.append(text)):
        video = pipe.generate_video("a red fox", width=w, height=h, num_frames=n, steps=steps, cfg_scale=1.0,
                                    seed=3, progress=False)
    os.environ.pop(ENV, None)
    assert video.timings.sampling is not None
    dit = [b for runner, b in compute_buffers(lines) if runner.startswith("Wan2")]  # the DiT runner
    return {"step_s": video.timings.sampling / steps, "frames": video.frames.astype(np.int16),
            "dit_buffer": dit[0] if dit else None}


def bench_size(pipe: wanpy.WanPipeline, size: tuple[int, int, int], settings: list[str], rounds: int,
               steps: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {s: [] for s in settings}
    last: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        order = settings[r % len(settings):] + settings[:r % len(settings)]
        for s in order:
            last[s] = _run(pipe, s, size, steps)
            runs[s].append(last[s]["step_s"])
            print(f"  {'x'.join(map(str, size))} round {r + 1} chunks {s}: {last[s]['step_s']:.3f} s/step",
                  flush=True)
    base = statistics.median(runs["1"])
    rows = {}
    for s in settings:
        med = statistics.median(runs[s])
        rows[s] = {"step_s": med, "vs_unchunked": med / base, "runs": runs[s],
                   "dit_buffer_mib": None if last[s]["dit_buffer"] is None else last[s]["dit_buffer"] / 2**20,
                   "max_pixel_diff": int(np.abs(last[s]["frames"] - last["1"]["frames"]).max())}
    return {"size": "x".join(map(str, size)), "settings": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="q4_0", help="the kit's DiT dtype")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sizes", default="128x128x17,256x256x17")
    parser.add_argument("--chunks", default="2,4", help="forced chunk counts, besides auto and 1")
    parser.add_argument("--threads", type=int, default=None, help="n_threads (default: sd.cpp's)")
    parser.add_argument("--flash-attention", action="store_true", help="(large sizes: no L x L attention)")
    parser.add_argument("--keep-vae-on-cpu", action="store_true", help="(lavapipe: a faster decode)")
    parser.add_argument("--json")
    args = parser.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    settings = ["auto", "1"] + args.chunks.split(",")
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype=args.dtype, seed=0)
    result: dict[str, Any] = {"backend": wanpy._core.BACKEND, "dtype": args.dtype, "rounds": args.rounds,
                              "steps": args.steps, "flash_attention": args.flash_attention, "sizes": []}
    extra: dict[str, Any] = {"flash_attention": args.flash_attention, "keep_vae_on_cpu": args.keep_vae_on_cpu}
    if args.threads is not None:
        extra["n_threads"] = args.threads
    with wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False, **extra) as pipe:
        result["device"] = pipe.device.name
        for size in sizes:
            row = bench_size(pipe, size, settings, args.rounds, args.steps)  # type: ignore[arg-type]
            result["sizes"].append(row)
            for s, r in row["settings"].items():
                print(f"{result['backend']} {row['size']} chunks {s}: {r['step_s']:.3f} s/step "
                      f"({r['vs_unchunked']:.3f}x unchunked), DiT compute buffer {r['dit_buffer_mib']:.2f} MiB, "
                      f"max pixel difference {r['max_pixel_diff']}", flush=True)
            if args.json:  # after each size: a long run stopped early keeps what it measured
                with open(args.json, "w", encoding="utf-8") as f:
                    json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
