"""The 4 GiB frontier: what each published Wan model can generate on a device that allows
4 GiB per allocation (0xfffffffc, as the users' Vulkan driver reports), as the pre-flight
computes it from sd.cpp's real graphs, at three stages of wanpy's patches in the same build:
upstream's graphs (WANPY_FLASH_ATTN_PAD_KV=1, WANPY_FFN_CHUNKS=1), patch 0001 (flash attention
without the quadratic mask; WANPY_FFN_CHUNKS=1) and 0001 + 0007 (the DiT's feed-forward block in
token chunks above the ceiling: wanpy as built).

For each model: the most frames at its native size (1280x720; the TI2V-5B's 1280x704) and the
largest size of that aspect at 161 frames (sizes step by the model's multiple, widths up to
1920), under the cheapest settings that fit (``fit="auto"``'s search: flash attention, VAE tiling
and tile size).

    PYTHONPATH=src python3 bench/preflight_frontier.py [--max-allocation 0xfffffffc] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from wanpy.catalogue import DITS, PRESET_ALIASES
from wanpy.memory.check import prepare
from wanpy.memory.measure import Config
from wanpy.memory.presets import PRESETS
from wanpy.memory.search import choose, largest_fitting
from wanpy.units import parse_bytes

IMAGES = {"wan2.1-i2v-14b": (True, False), "wan2.1-flf2v-14b": (True, True), "wan2.2-i2v-a14b": (True, False),
          "wan2.2-ti2v-5b": (False, False)}
NATIVE = {"wan2.2-ti2v-5b": (1280, 704)}  # the others: 1280x720
FRAMES = 161
STAGES = {"upstream": {"WANPY_FLASH_ATTN_PAD_KV": "1", "WANPY_FFN_CHUNKS": "1"},
          "0001": {"WANPY_FFN_CHUNKS": "1"},
          "0001+0007": {}}


def frontier(model: str, max_allocation: int) -> dict:
    init, end = IMAGES.get(model, (False, False))
    width, height = NATIVE.get(model, (1280, 720))
    p = prepare(
        model, width=width, height=height, num_frames=FRAMES, flash_attention=False, vae_tiling=False,
        text_encoder=None, vae=None, high_noise=None, offload_to_cpu=False, keep_vae_on_cpu=False, device=None,
        max_allocation=max_allocation, total_memory=None, clip_vision=None, init_image=init, end_image=end,
        tile_size=None, tile_overlap=0.5)
    s, cfg, multiple = p.session, p.config, p.multiple
    # the cheapest per-allocation settings only: the VAE on the CPU and offloading are not
    # what a frontier of the device's allocation ceiling is about
    t = dataclasses.replace(p.target, is_cpu=True)

    def fits(c: Config) -> bool:
        return choose(s, c, t).chosen is not None

    longest = DITS[s.dit_desc(False)].longest_clip  # beyond it sd.cpp cannot build the VAE graphs
    k = largest_fitting(lambda k: fits(dataclasses.replace(cfg, num_frames=4 * k + 1)), (longest - 1) // 4)
    capped = k is not None and 4 * k + 1 == longest
    aspect = height / width

    def size(n: int) -> tuple[int, int]:
        return n * multiple, max(multiple, round(n * multiple * aspect / multiple) * multiple)

    n = largest_fitting(lambda n: fits(dataclasses.replace(cfg, width=size(n)[0], height=size(n)[1])),
                         1920 // multiple, start=1)
    return {"native": f"{width}x{height}", "frames_at_native": None if k is None else 4 * k + 1,
            "frames_capped_by_sdcpp": capped, "size_at_161_frames": None if n is None else "x".join(map(str, size(n)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-allocation", type=parse_bytes, default=0xFFFFFFFC)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    started = time.perf_counter()
    saved = {k: os.environ.get(k) for k in ("WANPY_FLASH_ATTN_PAD_KV", "WANPY_FFN_CHUNKS")}
    for model in PRESETS:
        if model in PRESET_ALIASES:
            continue  # the same architecture as the family it names
        row: dict = {"model": model}
        for stage, env in STAGES.items():
            for k in saved:
                os.environ.pop(k, None)
            os.environ.update(env)
            row[stage] = frontier(model, args.max_allocation)
        rows.append(row)
        print(f"{model}: {json.dumps({k: v for k, v in row.items() if k != 'model'})}", flush=True)
    for k, v in saved.items():
        os.environ.pop(k, None)
        if v is not None:
            os.environ[k] = v

    def frames(x: dict) -> str:
        n = x["frames_at_native"]
        return "none" if n is None else f"{n}{'*' if x['frames_capped_by_sdcpp'] else ''}"

    print("\n| model | native size | frames at native size: upstream | 0001 | 0001+0007 "
          "| size at 161 frames: upstream | 0001 | 0001+0007 |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['0001+0007']['native']} | "
              + " | ".join(frames(r[s]) for s in STAGES) + " | "
              + " | ".join(r[s]["size_at_161_frames"] or "none" for s in STAGES) + " |")
    print(f"\n(max_allocation {args.max_allocation:#x}; widths up to 1920; *: the longest clip sd.cpp can "
          f"build its VAE graphs for, not a memory limit; {time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"max_allocation": args.max_allocation, "stages": STAGES, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
