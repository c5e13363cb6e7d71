"""What a Ray batch costs beyond the generations, and what loading once saves, on the random-weight
Wan2.1-T2V-1.3B (CPU build; one worker holding every CPU, so both sides use the same threads).

Baseline: N one-shot ``wanpy.generate_video`` calls (each loads the models, generates, frees).
Batch: ``wanpy.distributed.generate_batch`` of the same N requests on a local Ray cluster this
bench starts, one worker of ``--cpus`` CPUs. Reported, from the same run:
- scheduling overhead per item: the time between consecutive results minus the item's own
  generation seconds on the worker (the driver's dispatch, Ray's calls, moving the frames back);
- the batch's fixed start cost: Ray's start, the worker's process and its one load;
- wall seconds of the whole batch (Ray's start included) / the N one-shot calls'.

    python bench/bench_batch.py [--items 6] [--size 64x64] [--frames 5] [--steps 4] [--cpus 2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import wanpy
from wanpy.testing import cached_model_set


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=6)
    p.add_argument("--size", default="64x64")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    width, height = map(int, a.size.split("x"))
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    models = {"diffusion_model": str(kit.diffusion_model), "vae": str(kit.vae)}
    requests = [dict(prompt=f"a fox, take {i}", width=width, height=height, num_frames=a.frames, steps=a.steps,
                     cfg_scale=1.0, seed=100 + i) for i in range(a.items)]
    report: dict[str, Any] = {"machine": f"{wanpy._core.BACKEND}, {a.cpus} CPUs", "items": a.items,
                              "request": {k: v for k, v in requests[0].items() if k not in ("prompt", "seed")}}

    def save() -> None:
        if a.json:
            a.json.write_text(json.dumps(report, indent=2) + "\n")

    one_shot, frames = [], []
    start = time.perf_counter()
    for r in requests:
        t = time.perf_counter()
        video = wanpy.generate_video(**r, **models, n_threads=a.cpus, progress=False)
        one_shot.append(time.perf_counter() - t)
        frames.append(video.frames)
        print(f"one-shot {len(one_shot)}/{a.items}: {one_shot[-1]:.2f} s (generation "
              f"{video.timings.total if video.timings else float('nan'):.2f} s)", flush=True)
    report["one_shot"] = {"wall_s": time.perf_counter() - start, "per_call_s": one_shot}
    save()

    import ray

    from wanpy.distributed import generate_batch

    start = time.perf_counter()
    ray.init(num_cpus=a.cpus, include_dashboard=False, logging_level="WARNING")
    ray_start = time.perf_counter() - start
    arrivals, results = [], []
    for result in generate_batch(requests, models=models, resources_per_worker={"CPU": a.cpus}):
        arrivals.append(time.perf_counter())
        results.append(result)
        print(f"batch {len(results)}/{a.items}: {result}", flush=True)
    wall = time.perf_counter() - start
    ray.shutdown()
    assert all(r.ok for r in results), results
    results_by_order = results
    same = all(np.array_equal(r.video.frames, frames[r.index]) for r in results if r.video is not None)
    gaps = [arrivals[i] - arrivals[i - 1] - (results_by_order[i].seconds or 0.0) for i in range(1, len(results))]
    load = results[0].load_seconds or 0.0
    first = arrivals[0] - start - (results[0].seconds or 0.0)
    report["batch"] = {
        "wall_s": wall, "ray_start_s": ray_start, "worker_load_s": load,
        "start_cost_s": first, "item_seconds": [r.seconds for r in results],
        "overhead_per_item_s": {"median": statistics.median(gaps), "max": max(gaps)},
        "frames_equal_one_shot": same,
    }
    report["ratio_batch_wall_over_one_shot"] = wall / report["one_shot"]["wall_s"]
    save()
    print(f"\none-shot x{a.items}: {report['one_shot']['wall_s']:.1f} s; batch: {wall:.1f} s "
          f"(Ray start {ray_start:.1f} s, start to first dispatch + load {first:.1f} s, one load {load:.1f} s); "
          f"ratio {report['ratio_batch_wall_over_one_shot']:.3f}\nscheduling overhead per item: median "
          f"{statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms; frames equal: {same}")


if __name__ == "__main__":
    main()
