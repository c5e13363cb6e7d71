"""The tiny video decoder (TAEHV, ``tiny_vae=``) against the full Wan2.1 VAE, on the random-weight
Wan2.1-T2V-1.3B: decode seconds (sd.cpp's own timing of the VAE decode phase) and the decoder's memory
(the compute buffer and weights sd.cpp logs allocating), at each size, as ratios tiny / full measured in
one run. Two pipelines (full, tiny) stay loaded and are alternated round by round; every generation
samples one step, so the decode is the phase that differs. Random weights say nothing about image
quality: no pixel comparison is made.

    python bench/bench_tiny_vae.py [--rounds 2] [--sizes 128x128x17,256x256x17] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import wanpy
from wanpy import _core, _logging
from wanpy.testing import cached_model_set, cached_tiny_vae
from wanpy.testing.sdcpp_logs import compute_buffers, params_buffers

_DECODER = {"full": "wan_vae", "tiny": "taehv"}  # sd.cpp's runner names in its log lines


def _load(kit: Any, tiny: bool) -> tuple[wanpy.WanPipeline, float]:
    lines: list[str] = []
    with _logging.observe(lambda source, level, text: lines.append(text)):
        pipe = wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False,
                                 tiny_vae=cached_tiny_vae() if tiny else None)
    return pipe, params_buffers(lines)[_DECODER["tiny" if tiny else "full"]]


def _decode(pipe: wanpy.WanPipeline, name: str, w: int, h: int, n: int) -> tuple[float, float]:
    lines: list[str] = []
    with _logging.observe(lambda source, level, text: lines.append(text)):
        video = pipe.generate_video("x", width=w, height=h, num_frames=n, steps=1, seed=1, progress=False)
    assert video.timings.vae_decode is not None
    buffer = max(b for runner, b in compute_buffers(lines) if runner == _DECODER[name])
    return video.timings.vae_decode, buffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="128x128x17,256x256x17")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    full, full_weights = _load(kit, tiny=False)
    tiny, tiny_weights = _load(kit, tiny=True)
    result: dict[str, Any] = {"backend": _core.BACKEND, "rounds": args.rounds, "weights_bytes": {
        "full": full_weights, "tiny": tiny_weights, "tiny_over_full": tiny_weights / full_weights}, "sizes": []}
    with full, tiny:
        for w, h, n in sizes:
            seconds: dict[str, list[float]] = {"full": [], "tiny": []}
            buffers: dict[str, float] = {}
            for r in range(args.rounds):
                for name, pipe in (("full", full), ("tiny", tiny)):
                    start = time.perf_counter()
                    s, buffers[name] = _decode(pipe, name, w, h, n)
                    seconds[name].append(s)
                    print(f"{w}x{h}x{n} round {r + 1} {name}: decode {s:.2f} s, buffer {buffers[name] / 2**20:.1f} MiB "
                          f"({time.perf_counter() - start:.0f} s in all)", file=sys.stderr, flush=True)
            a, b = statistics.median(seconds["full"]), statistics.median(seconds["tiny"])
            result["sizes"].append({
                "size": f"{w}x{h}x{n}", "decode_s": {"full": a, "tiny": b, "tiny_over_full": b / a},
                "decode_buffer_bytes": {**buffers, "tiny_over_full": buffers["tiny"] / buffers["full"]},
                "decoder_memory_bytes": {"full": buffers["full"] + full_weights,
                                         "tiny": buffers["tiny"] + tiny_weights,
                                         "tiny_over_full": (buffers["tiny"] + tiny_weights)
                                         / (buffers["full"] + full_weights)},
                "runs": seconds})
            if args.json:  # written after every size: an interrupted run keeps what it measured
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
