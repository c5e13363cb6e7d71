"""What previews cost: sampling seconds per step with no preview, "proj" and "vae" (every step), on the
random-weight Wan2.1-T2V-1.3B, one pipeline, the modes alternated in one run (ratios to no preview).

    python bench/bench_previews.py [--size 64x64] [--frames 9] [--steps 4] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import wanpy
from wanpy.testing import cached_model_set

MODES = (None, "proj", "vae")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    per_step: dict[str, list[float]] = {str(m): [] for m in MODES}
    with wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False) as pipe:
        for _ in range(args.rounds):
            for mode in MODES:
                options = {} if mode is None else {"preview": mode, "callback": lambda p: None}
                video = pipe.generate_video("a red fox", width=width, height=height, num_frames=args.frames,
                                            steps=args.steps, cfg_scale=1.0, seed=1, progress=False,
                                            **options)  # type: ignore[arg-type]
                assert video.timings.sampling is not None
                per_step[str(mode)].append(video.timings.sampling / args.steps)
    base = statistics.median(per_step["None"])
    print(f"{width}x{height}, {args.frames} frames, {args.steps} steps, {args.rounds} rounds alternated; "
          "sampling seconds per step (median)")
    for mode, values in per_step.items():
        median = statistics.median(values)
        print(f"  preview={mode:<5} {median:8.3f} s/step   {median / base:5.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"size": [width, height], "frames": args.frames, "steps": args.steps, "per_step": per_step},
                      fh, indent=2)


if __name__ == "__main__":
    main()
