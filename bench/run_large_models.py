"""The 14B modes end to end on random weights: Wan2.1 I2V-14B and FLF2V-14B (with CLIP vision),
Wan2.2 T2V-A14B and I2V-A14B (two experts), Wan2.1 VACE-14B and Wan2.2 VACE-Fun-A14B (a control video
and a reference image: another control video changes the frames, at vace_strength 0 no control video
does), one fresh process each, at a tiny size.

The test suite runs the 1.3B and the TI2V-5B; the 14B sets are 8 GB per DiT at q4_0 (17 GB for
an A14B pair), too large and slow for CI on a 2-core machine, so this script is where they run.
Each variant's set is written into a temporary folder (or ``--keep`` it in the kit's cache),
generated with, checked, and deleted. Per variant it reports: frames returned against frames
asked, finite and not constant, the timings sd.cpp logged per phase (image encoding, high-noise
and low-noise sampling, VAE decode), load time, wall time and peak RSS of the process; for the
A14B pairs also the high-noise steps that ran, a second clip with a low-noise LoRA (the kit's
``make_lora``) whose frames must differ from the first, and the high-noise LoRA proof (patch 0006,
LoRAs at run time on the quantized experts): a random high-noise LoRA changes the frames, one with
zero ``lora_up`` does not, and with no high-noise step a high-noise LoRA leaves the low-noise
expert's frames bit-identical; sd.cpp's lines on which LoRA went to which expert are kept.
``--few-step`` also times 4 steps at cfg 1 with a LoRA per expert against the default 40 steps.

Usage (about 45 minutes and 20 GB of free disk and RAM on 2 cores):
  PYTHONPATH=src python3 bench/run_large_models.py --json large_models.json
  PYTHONPATH=src python3 bench/run_large_models.py --variants wan2.1-i2v-14b --size 32x32 --frames 5
  PYTHONPATH=src python3 bench/run_large_models.py --variants wan2.2-t2v-a14b --few-step  # + ~1 hour
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("wan2.1-i2v-14b", "wan2.1-flf2v-14b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.1-vace-14b",
            "wan2.2-vace-fun-a14b")

_CHILD = r"""
import dataclasses, json, logging, re, sys, time, traceback
import numpy as np
import wanpy
from wanpy.catalogue import FAMILIES
from wanpy.testing import cached_model_set, make_lora, make_model_set
from wanpy.testing.scenes import scene_frame

a = json.loads(sys.argv[1])
# sd.cpp's lines on which LoRA went to which runner, and how many of its tensors were used
_LORA_LINE = re.compile(r"lora_models:$|LoRA tensors have been applied|loading LoRA from|lora .* ignored")
t = time.perf_counter()
if a["keep"]:
    models = cached_model_set(variant=a["variant"], dtype=a["dtype"], seed=0)
else:
    models = make_model_set(a["folder"], variant=a["variant"], dtype=a["dtype"], seed=0)
written = time.perf_counter() - t
w, h, n = a["width"], a["height"], a["frames"]
family = FAMILIES[models.family]
request = dict(width=w, height=h, num_frames=n, steps=a["steps"], seed=11, progress=False)
if family.images in ("init", "init_end"):
    request["init_image"] = (scene_frame(0, h, w) * 255).round().astype(np.uint8)
if family.images == "init_end":
    request["end_image"] = (scene_frame(40, h, w) * 255).round().astype(np.uint8)
if family.two_experts:
    request.update(high_noise_steps=1)
if family.vace:  # a control video (a moving scene) and a reference image
    request["control_video"] = np.stack([(scene_frame(i, h, w, n=max(n, 2)) * 255).round().astype(np.uint8)
                                         for i in range(n)])
    request["reference_image"] = (scene_frame(20, h, w) * 255).round().astype(np.uint8)
out = {"variant": a["variant"], "family": models.family, "files_written_s": written,
       "files_gib": sum(p.stat().st_size for p in models.files) / 2**30}
t = time.perf_counter()
with wanpy.WanPipeline(**models.pipeline_kwargs(), n_threads=a["threads"]) as pipe:
    out["load_s"] = pipe.load_seconds
    video = pipe.generate_video("a red fox running through the snow", **request)
    f = video.frames
    out.update(frames_asked=n, frames=list(f.shape), finite=bool(np.isfinite(f).all()),
               not_constant=bool(f.std() > 0), mean=float(f.mean()),
               timings={k: v for k, v in vars(video.timings).items() if v is not None},
               high_noise_steps_run=video.params.get("high_noise_steps_run"))
    if family.vace:
        # another control video changes the frames; at vace_strength 0 no control video can
        other = dict(request, control_video=request["control_video"][::-1].copy())
        steered = pipe.generate_video("a red fox running through the snow", **other).frames
        off = [pipe.generate_video("a red fox running through the snow", **dict(r, vace_strength=0.0)).frames
               for r in (request, other)]
        out["vace"] = {"max_abs_difference_other_control": int(np.abs(steered.astype(int) - f).max()),
                       "strength_0_bit_identical_across_controls": bool(np.array_equal(off[0], off[1])),
                       "max_abs_difference_strength_0_to_1": int(np.abs(off[0].astype(int) - f).max())}
    if family.two_experts:
        lora = make_lora(a["folder"] + "/lora.safetensors", models.diffusion_model, blocks=range(4))
        with_lora = pipe.generate_video("a red fox running through the snow", loras=[(str(lora), 1.0)], **request)
        out["low_noise_lora"] = {
            "frames": list(with_lora.frames.shape),
            "max_abs_difference_to_without": int(np.abs(with_lora.frames.astype(int) - f).max()),
            "lora_loading_s": with_lora.timings.lora_loading}
        try:  # a failure here still reports the clips above
            # high-noise LoRAs at run time on the quantized high-noise expert (patch 0006)
            hn = make_lora(a["folder"] + "/hn.safetensors", models.high_noise_diffusion_model, blocks=range(4), seed=1)
            hn_zero = make_lora(a["folder"] + "/hn0.safetensors", models.high_noise_diffusion_model, blocks=range(4),
                                init="zeros")
            lora_lines = []
            handler = logging.Handler()
            handler.emit = lambda r: lora_lines.append(r.getMessage()) if _LORA_LINE.search(r.getMessage()) else None
            logging.getLogger("wanpy").addHandler(handler)
            logging.getLogger("wanpy").setLevel(logging.INFO)

            def generate(loras, req=None):
                lora_lines.clear()
                if req is None:
                    v = pipe.generate_video("a red fox running through the snow", loras=loras, **request)
                else:
                    v = pipe.generate_video(dataclasses.replace(req, loras=tuple(loras)), progress=False)
                return v, list(lora_lines)

            def compare(v, base):
                d = np.abs(v.frames.astype(int) - base.frames.astype(int))
                # timings.high_noise_sampling: None when sd.cpp logged no high-noise pass
                return {"frames": list(v.frames.shape), "high_noise_sampling_s": v.timings.high_noise_sampling,
                        "max_abs_difference_to_without": int(d.max()),
                        "mean_abs_difference_to_without": float(d.mean()),
                        "bit_identical_to_without": bool(np.array_equal(v.frames, base.frames))}

            v, lines = generate([(str(hn), 1.0, True)])
            out["high_noise_lora"] = compare(v, video) | {"sdcpp_lora_lines": lines}
            v, lines = generate([(str(hn_zero), 1.0, True)])
            out["zero_high_noise_lora"] = compare(v, video) | {"sdcpp_lora_lines": lines}
            # The low-noise expert alone: wanpy asks for high_noise_steps >= 1, so the checked request's
            # count is set to 0 afterwards; sd.cpp then runs every step on the low-noise expert (wanpy's
            # step counter, which expects a high-noise pass first, would count them as high-noise steps).
            req_options = {k: x for k, x in request.items() if k != "progress"}
            req = pipe.request("a red fox running through the snow", **req_options)
            req = dataclasses.replace(req, high_noise=dataclasses.replace(req.high_noise, steps=0))
            low_alone, _ = generate([], req)
            v, lines = generate([(str(hn), 1.0, True)], req)
            out["low_noise_pass_alone_with_high_noise_lora"] = compare(v, low_alone) | {
                "high_noise_sampling_s_without": low_alone.timings.high_noise_sampling, "sdcpp_lora_lines": lines}
            if a["few_step"]:
                # the few-step recipe (a distillation LoRA per expert, cfg 1) against the published
                # defaults' 40 steps; random weights: time only, nothing about quality
                few = dict(request, steps=4, cfg_scale=1.0, high_noise_cfg_scale=1.0)
                few.pop("high_noise_steps")
                full = dict(request, steps=family.defaults.steps)
                full.pop("high_noise_steps")
                runs = {}
                for name, options, loras in (("4_steps_cfg1_two_loras", few, [(str(hn), 1.0, True), (str(lora), 1.0)]),
                                             ("default_steps_no_lora", full, [])):
                    lora_lines.clear()
                    t0 = time.perf_counter()
                    v = pipe.generate_video("a red fox running through the snow", loras=loras, **options)
                    runs[name] = {"wall_s": time.perf_counter() - t0, "steps": options["steps"],
                                  "cfg_scale": v.params.get("cfg_scale"),
                                  "high_noise_cfg_scale": v.params.get("high_noise_cfg_scale"),
                                  "high_noise_steps_run": v.params.get("high_noise_steps_run"),
                                  "frames": list(v.frames.shape),
                                  "timings": {k: x for k, x in vars(v.timings).items() if x is not None},
                                  "sdcpp_lora_lines": list(lora_lines)}
                runs["speedup"] = runs["default_steps_no_lora"]["wall_s"] / runs["4_steps_cfg1_two_loras"]["wall_s"]
                out["few_step"] = runs
            logging.getLogger("wanpy").removeHandler(handler)
        except Exception:
            out["lora_proof_error"] = traceback.format_exc()
out["pipeline_wall_s"] = time.perf_counter() - t
out["peak_rss_mib"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024
print("RESULT " + json.dumps(out))
"""


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"wanpy-{variant}-", dir=args.workdir))
    payload = {"variant": variant, "dtype": args.dtype, "folder": str(folder), "keep": args.keep,
               "width": args.size[0], "height": args.size[1], "frames": args.frames, "steps": args.steps,
               "threads": args.threads, "few_step": args.few_step}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(payload)], capture_output=True, text=True)
        stdout, stderr = proc.stdout, proc.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    wall = time.perf_counter() - start
    line = next((l for l in stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        return {"variant": variant, "error": f"exit status {proc.returncode}", "stderr_tail": stderr[-2000:]}
    result = json.loads(line.removeprefix("RESULT "))
    result["process_wall_s"] = wall
    return result


def high_noise_lora_ok(r: dict[str, Any]) -> bool:
    """A14B: a random high-noise LoRA changes the frames, a zero one does not, and with no
    high-noise step a high-noise LoRA leaves the low-noise expert's frames bit-identical."""
    if "lora_proof_error" in r:
        return False
    if "high_noise_lora" not in r:
        return True
    alone = r["low_noise_pass_alone_with_high_noise_lora"]
    return (r["high_noise_lora"]["max_abs_difference_to_without"] > 0
            and r["zero_high_noise_lora"]["bit_identical_to_without"]
            and alone["bit_identical_to_without"] and alone["high_noise_sampling_s"] is None
            and alone["high_noise_sampling_s_without"] is None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    parser.add_argument("--dtype", default="q4_0")
    parser.add_argument("--size", type=lambda s: tuple(int(x) for x in s.split("x")), default=(32, 32))
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--few-step", action="store_true",
                        help="A14B: also time 4 steps at cfg 1 with a LoRA per expert against the default steps")
    parser.add_argument("--keep", action="store_true", help="keep the sets in the kit's cache")
    parser.add_argument("--workdir", default=None, help="where the sets are written (default: the temp dir)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for variant in args.variants:
        result = run_variant(variant, args)
        results.append(result)
        print(json.dumps(result), flush=True)
    ok = all("error" not in r and r["frames"][0] == r["frames_asked"] and r["finite"] and r["not_constant"]
             and high_noise_lora_ok(r) for r in results)
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args) | {
            "json": str(args.json)}, "results": results, "all_ok": ok}, indent=1, default=str))
    print("all ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
