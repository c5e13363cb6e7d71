"""Pre-flight speed: a full-size Wan2.x-T2V-14B file (sparse, from the model kit) at
832x480, 161 frames, with its umt5-xxl text encoder and VAE, after import.

Reports the median of N runs (a fresh session cache each time: header reading, sd.cpp's
ModelLoader, runner construction, graph building, ggml's measure-only allocation) and,
as the baseline measured in the same run, the time to read the same three headers with
``wanpy.headers.read_header``: the ratio says what the pre-flight costs on top of
merely opening the files. Target: under 100 ms.

    python bench/bench_preflight.py [--runs 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import wanpy
from wanpy.headers import read_header
from wanpy.memory.session import _SESSIONS
from wanpy.testing import cached_model_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    ms = cached_model_set(variant="wan2.x-t2v-14b", dtype="q4_k", seed=0, sparse=True, text_encoder=True)
    files = (ms.diffusion_model, ms.vae, ms.text_encoder)
    cold, warm, headers = [], [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        for f in files:
            read_header(f)
        headers.append(time.perf_counter() - t)
        _SESSIONS.clear()
        t = time.perf_counter()
        report = wanpy.preflight(ms.diffusion_model, vae=ms.vae, text_encoder=ms.text_encoder, width=832,
                                 height=480, num_frames=161, suggest=False)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        wanpy.preflight(ms.diffusion_model, vae=ms.vae, text_encoder=ms.text_encoder, width=832, height=480,
                        num_frames=161, flash_attention=True, suggest=False)
        warm.append(time.perf_counter() - t)
    base = statistics.median(headers)
    print(f"model: {report.model}; largest {report.largest}")
    print("| what | median ms | x header read |")
    print("|---|---:|---:|")
    print(f"| read 3 headers (baseline) | {base * 1000:.1f} | 1.0 |")
    for label, xs in (("pre-flight, new session", cold), ("pre-flight, session reused", warm)):
        print(f"| {label} | {statistics.median(xs) * 1000:.1f} | {statistics.median(xs) / base:.1f} |")


if __name__ == "__main__":
    main()
