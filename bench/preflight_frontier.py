"""The 4 GiB frontier: what each published Wan model can generate on a device that allows
4 GiB per allocation (0xfffffffc, as the users' Vulkan driver reports), before and after
wanpy's flash-attention patch (extern/patches/0001), as the pre-flight computes it.

For each model: the most frames at 832x480 and the largest 832x480-aspect size at 161 frames
(sizes step by the model's multiple), under the cheapest settings that fit (``fit="auto"``'s
search: flash attention, VAE tiling and tile size). "Before" measures upstream's graphs in the
same build (WANPY_FLASH_ATTN_PAD_KV=1 restores sd.cpp's padded flash attention).

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

WIDTH, HEIGHT, FRAMES = 832, 480, 161


def frontier(model: str, max_allocation: int) -> dict:
    init, end = IMAGES.get(model, (False, False))
    p = prepare(
        model, width=WIDTH, height=HEIGHT, num_frames=FRAMES, flash_attention=False, vae_tiling=False,
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
    aspect = HEIGHT / WIDTH

    def size(n: int) -> tuple[int, int]:
        return n * multiple, max(multiple, round(n * multiple * aspect / multiple) * multiple)

    n = largest_fitting(lambda n: fits(dataclasses.replace(cfg, width=size(n)[0], height=size(n)[1])),
                         1920 // multiple, start=1)
    return {"frames_at_832x480": None if k is None else 4 * k + 1, "frames_capped_by_sdcpp": capped,
            "size_at_161_frames": None if n is None else "x".join(map(str, size(n)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-allocation", type=parse_bytes, default=0xFFFFFFFC)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    started = time.perf_counter()
    for model in PRESETS:
        if model in PRESET_ALIASES:
            continue  # the same architecture as the family it names
        row = {"model": model}
        for label, env in (("before", "1"), ("after", None)):
            if env is None:
                os.environ.pop("WANPY_FLASH_ATTN_PAD_KV", None)
            else:
                os.environ["WANPY_FLASH_ATTN_PAD_KV"] = env
            row[label] = frontier(model, args.max_allocation)
        rows.append(row)
    os.environ.pop("WANPY_FLASH_ATTN_PAD_KV", None)
    print("| model | frames at 832x480, before | after | size at 161 frames, before | after |\n"
          "|---|---:|---:|---:|---:|")

    def frames(x: dict) -> str:
        n = x["frames_at_832x480"]
        return "none" if n is None else f"{n}{'*' if x['frames_capped_by_sdcpp'] else ''}"

    for r in rows:
        b, a = r["before"], r["after"]
        print(f"| {r['model']} | {frames(b)} | {frames(a)} | "
              f"{b['size_at_161_frames'] or 'none'} | {a['size_at_161_frames'] or 'none'} |")
    print(f"\n(max_allocation {args.max_allocation:#x}; widths up to 1920; *: the longest clip sd.cpp can "
          f"build its VAE graphs for, not a memory limit; {time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"max_allocation": args.max_allocation, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
