"""What each step cache saves: every mode with its default settings (and any extra settings asked)
against no cache, the same request, alternated in one run on the random-weight Wan2.1-T2V-1.3B.

Per setting: model evaluations run and served by the cache (sd.cpp's own counts), sampling
seconds, seconds per evaluation run (the cache's own overhead shows as a ratio above 1), the
sampling time against no cache, and max/mean absolute pixel difference to the uncached frames.
Random weights say nothing about visual quality: the pixel difference is only a measurement.

    python bench/bench_step_cache.py [--size 128x128] [--frames 17] [--steps 20] [--rounds 2]
        [--extra easycache:reuse_threshold=1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np

import wanpy
from wanpy.cache import CACHE_MODES, parse_cache_options
from wanpy.testing import cached_model_set


def _setting(text: str) -> wanpy.StepCache:
    mode, _, rest = text.partition(":")
    options = dict(item.split("=", 1) for item in rest.split(",") if item)
    return parse_cache_options(mode, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--extra", action="append", default=[], metavar="MODE:NAME=VALUE,...",
                        help="a further setting to measure (repeatable)")
    parser.add_argument("--json")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    settings: list[wanpy.StepCache | None] = [None, *(wanpy.StepCache(m) for m in CACHE_MODES),  # type: ignore[arg-type]
                                              *(_setting(t) for t in args.extra)]
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(settings))}
    reference: np.ndarray | None = None
    with wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False, n_threads=args.threads) as pipe:
        for _ in range(args.rounds):
            for i, cache in enumerate(settings):
                video = pipe.generate_video("a red fox", width=width, height=height, num_frames=args.frames,
                                            steps=args.steps, seed=1, progress=False, cache=cache)
                if reference is None:
                    reference = video.frames.astype(np.int16)
                diff = np.abs(video.frames.astype(np.int16) - reference)
                runs[i].append({"sampling_s": video.timings.sampling, "computed": video.model_evaluations,
                                "cached": video.cached_evaluations, "max_diff": int(diff.max()),
                                "mean_diff": float(diff.mean())})
                print(f"  {cache!r}: sampling {video.timings.sampling:.2f} s, {video.model_evaluations} run, "
                      f"{video.cached_evaluations} cached", flush=True)
                if args.json:  # what is measured so far survives a stopped run
                    _dump(args.json, {"size": [width, height], "frames": args.frames, "steps": args.steps,
                                      "partial": True, "load_average": os.getloadavg(),
                                      "settings": [None if c is None else c.to_dict() for c in settings],
                                      "runs": [runs[j] for j in range(len(settings))]})
    rows = []
    for i, cache in enumerate(settings):
        r = runs[i]
        sampling = statistics.median(x["sampling_s"] for x in r)
        rows.append({"cache": None if cache is None else cache.to_dict(), "computed": r[0]["computed"],
                     "cached": r[0]["cached"], "sampling_s": sampling,
                     "s_per_evaluation": sampling / r[0]["computed"], "max_diff": r[0]["max_diff"],
                     "mean_diff": r[0]["mean_diff"], "all_sampling_s": [x["sampling_s"] for x in r]})
    base = rows[0]
    print(f"{width}x{height}, {args.frames} frames, {args.steps} steps (cfg 5: two evaluations a step), "
          f"{args.rounds} rounds alternated; medians")
    print(f"{'cache':<44} {'run':>4} {'cached':>6} {'sampling s':>10} {'x none':>7} {'s/eval':>7} "
          f"{'x none':>7} {'max|d|':>6} {'mean|d|':>7}")
    for row in rows:
        c = row["cache"]
        name = "none" if c is None else ", ".join(f"{k}={v}" for k, v in c.items())
        print(f"{name[:44]:<44} {row['computed']:>4} {row['cached']:>6} {row['sampling_s']:>10.2f} "
              f"{row['sampling_s'] / base['sampling_s']:>7.3f} {row['s_per_evaluation']:>7.3f} "
              f"{row['s_per_evaluation'] / base['s_per_evaluation']:>7.3f} {row['max_diff']:>6} "
              f"{row['mean_diff']:>7.2f}")
    if args.json:
        _dump(args.json, {"size": [width, height], "frames": args.frames, "steps": args.steps, "rounds": args.rounds,
                          "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M"),
                          "load_average": os.getloadavg(), "rows": rows})


def _dump(path: str, data: dict[str, Any]) -> None:
    """Whole or not at all: a run stopped while writing keeps the previous file."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
