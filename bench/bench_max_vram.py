"""What a max_vram budget costs: sampling seconds per step with the weights offloaded, without a budget
(sd.cpp moves all of the DiT's weights to the device once per call) and with budgets (the graph in
segments, each streaming its own weights), on the random-weight Wan2.1-T2V-1.3B, alternated in one run.
Also the pre-flight's sampling-phase device peak for each, the figure a budget buys. Meant for a GPU
build: run it with the Vulkan build on lavapipe (GGML_VK_VISIBLE_DEVICES=0) or on a real GPU.

    GGML_VK_VISIBLE_DEVICES=0 python bench/bench_max_vram.py [--size 64x64x9] [--steps 3] [--rounds 2]
        [--budgets smallest,256MiB] [--json out.json]

"smallest" is the smallest budget sd.cpp can plan for the request (the finest split), from the pre-flight.
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
from wanpy import _core
from wanpy.testing import cached_model_set
from wanpy.units import parse_bytes

MiB = 2**20
SETTINGS = dict(flash_attention=True, offload_to_cpu=True, keep_vae_on_cpu=True)


def _smallest(kit: Any, request: dict[str, int]) -> int:
    report = wanpy.preflight(kit.diffusion_model, vae=kit.vae, max_vram="1MiB", suggest=False, **SETTINGS, **request)
    assert report.max_vram_floor is not None
    return -(-report.max_vram_floor // MiB) * MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="64x64x9")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budgets", default="smallest,256MiB")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    w, h, n = (int(v) for v in args.size.split("x"))
    request = dict(width=w, height=h, num_frames=n)
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    budgets: dict[str, int | None] = {"none": None}
    for b in args.budgets.split(","):
        budgets[b] = _smallest(kit, request) if b == "smallest" else parse_bytes(b)
    result: dict[str, Any] = {"backend": _core.BACKEND, "size": args.size, "steps": args.steps, "configs": {}}
    pipes = {}
    for name, budget in budgets.items():
        pipes[name] = wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False, max_vram=budget, **SETTINGS)
        report = wanpy.preflight(kit.diffusion_model, vae=kit.vae, max_vram=budget, suggest=False, **SETTINGS,
                                 **request)
        segments = next((a.name for a in report.allocations if a.kind == "segment weights"), "one graph")
        result["configs"][name] = {"max_vram": budget, "plan": segments, "seconds_per_step": [],
                                   "sampling_peak_bytes": next(p.device for p in report.phases
                                                               if p.phase == "sampling")}
    run = dict(steps=args.steps, cfg_scale=1.0, seed=5, progress=False, **request)
    for pipe in pipes.values():  # the first generation compiles the shaders: not measured
        pipe.generate_video("x", **dict(run, steps=1))
    for r in range(args.rounds):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            video = pipe.generate_video("x", **run)
            assert video.timings.sampling is not None
            per_step = video.timings.sampling / args.steps
            result["configs"][name]["seconds_per_step"].append(per_step)
            print(f"round {r + 1} {name}: {per_step:.2f} s/step ({time.perf_counter() - start:.0f} s in all)",
                  file=sys.stderr, flush=True)
    base = statistics.median(result["configs"]["none"]["seconds_per_step"])
    for cfg in result["configs"].values():
        cfg["median_seconds_per_step"] = statistics.median(cfg["seconds_per_step"])
        cfg["over_no_budget"] = cfg["median_seconds_per_step"] / base
    for pipe in pipes.values():
        pipe.close()
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
