"""Generation benchmarks: wanpy against stable-diffusion.cpp's own CLI, same engine, same request.

Both sides run the random-weight Wan2.1-T2V-1.3B set of ``wanpy.testing`` (q4_0 DiT, Wan2.1
VAE, no text encoder) with the same prompt, size, frame count, steps, sampler, scheduler,
flow shift, cfg scale, seed and thread count. The baseline is ``sd-cli`` built from the same
pinned sd.cpp source and backend flags by ``bench/build_sdcpp_tools.sh`` (bench-only); it
writes every frame as a PNG (``-o frame_%03d.png``, lossless) and wanpy's frames come back
as the NumPy array ``Video.frames``.

Sections:
  1. Same engine, same answer: wanpy's frames against sd-cli's, byte for byte (every pair
     of runs below is compared).
  2. Overhead: wall time and peak RSS of one whole job (a fresh process that loads the
     models and generates one clip: wanpy's one-shot ``wanpy.generate_video``, one sd-cli
     run), wanpy and sd-cli alternately, ``--runs`` times;
     medians and wanpy/sd-cli ratios (targets: time <= 1.00, peak RSS <= 1.05). Plus what
     ``import wanpy`` costs.
  3. Load once, generate many: ``--clips`` clips (seeds seed, seed+1, ...) in one
     WanPipeline in one process, against as many sd-cli runs.
  4. Threads: seconds per sampling step (sd.cpp's own "sampling completed" time / steps)
     at each of ``--thread-counts``, and frames per second of the whole job.

Wall time and peak RSS come from ``os.wait4`` on each child process (the whole process:
interpreter start, imports, model loading, generation, output). Every figure is measured
in this one session; ratios are what to compare across machines.

Usage:
  JOBS=2 bench/build_sdcpp_tools.sh            # once: build/bench-tools/bin/sd-cli
  PYTHONPATH=src python3 bench/bench_generation.py --json bench_generation.json --chart docs/bench_generation.png
  PYTHONPATH=src python3 bench/bench_generation.py --smoke --json /tmp/smoke.json   # seconds, for the test suite

Without sd-cli (or with ``--no-sdcpp``) only wanpy's own figures are measured, and the
output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SDCPP_CLI = ROOT / "build" / "bench-tools" / "bin" / "sd-cli"
TARGET_TIME_RATIO = 1.00
TARGET_RSS_RATIO = 1.05


@dataclass(frozen=True)
class Request:
    """One generation request, spelled identically for both engines."""

    prompt: str = "a red fox running through fresh snow"
    width: int = 64
    height: int = 64
    frames: int = 5
    steps: int = 2
    cfg_scale: float = 5.0
    flow_shift: float = 5.0
    sample_method: str = "euler"
    scheduler: str = "discrete"
    seed: int = 42
    threads: int = 2


@dataclass
class Run:
    """One child process: what it cost and what it made."""

    engine: str  # "wanpy" or "sd-cli"
    wall_s: float
    peak_rss_bytes: int
    cpu_s: float
    phases: dict[str, float]  # seconds per phase as sd.cpp logs them (per clip: lists in clips)
    frames: list[np.ndarray] = field(repr=False)  # one uint8 (F, H, W, 3) array per clip
    clips: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("frames")
        return d


# --- running a child and measuring it --------------------------------------------
def run_measured(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, Any, str]:
    """Run cmd to completion; its wall time, its own rusage (os.wait4) and its output."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}):\n{text[-3000:]}")
    return wall, usage, text


def peak_rss(usage: Any) -> int:
    return int(usage.ru_maxrss) * 1024  # Linux reports KiB


# sd.cpp's log lines that close a phase (the same lines wanpy's Video.timings come from)
_PHASE_LINES = {
    "load": re.compile(r"loading tensors completed, taking ([\d.]+)s"),
    "text_encoding": re.compile(r"get_learned_condition completed, taking ([\d.]+)s"),
    "sampling": re.compile(r"\bsampling completed, taking ([\d.]+)s"),  # not "sampling(high noise) ..."
    "vae_decode": re.compile(r"decode_first_stage completed, taking ([\d.]+)s"),
    "generate": re.compile(r"generate_video completed in ([\d.]+)s"),
}


def sdcpp_phases(log: str) -> dict[str, float]:
    phases = {}
    for name, pattern in _PHASE_LINES.items():
        found = [float(m.group(1)) for m in pattern.finditer(log)]
        if found:
            phases[name] = sum(found)
    return phases


def run_sdcpp(tool: Path, models: Any, req: Request, workdir: Path, tag: str) -> Run:
    """One sd-cli process: load, generate, write every frame as a PNG."""
    outdir = workdir / tag
    outdir.mkdir()
    cmd = [str(tool), "-M", "vid_gen", "--diffusion-model", str(models.diffusion_model), "--vae", str(models.vae),
           "-p", req.prompt, "-n", "", "-W", str(req.width), "-H", str(req.height),
           "--video-frames", str(req.frames), "--steps", str(req.steps), "--cfg-scale", repr(req.cfg_scale),
           "--flow-shift", repr(req.flow_shift), "--sampling-method", req.sample_method,
           "--scheduler", req.scheduler, "-s", str(req.seed), "-t", str(req.threads),
           "-o", str(outdir / "frame_%03d.png")]
    wall, usage, log = run_measured(cmd)
    pngs = sorted(outdir.glob("frame_*.png"))
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    for p in pngs:
        p.unlink()
    outdir.rmdir()
    return Run("sd-cli", wall, peak_rss(usage), usage.ru_utime + usage.ru_stime, sdcpp_phases(log), [frames])


# The wanpy child: a fresh interpreter that imports wanpy, loads the pipeline and generates
# the clips; it saves the frames for the comparison and prints its own timings as JSON.
_WANPY_CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
import numpy as np
import wanpy
t_import = time.perf_counter() - t0
rss_import = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
a = json.loads(sys.argv[1])
r = a["request"]
import logging, re
tensor_load = []
class Keep(logging.Handler):  # sd.cpp's own tensor-loading time, as sd-cli logs it
    def emit(self, record):
        m = re.search(r"loading tensors completed, taking ([\d.]+)s", record.getMessage())
        if m:
            tensor_load.append(float(m.group(1)))
logging.getLogger("wanpy").addHandler(Keep(logging.INFO))
logging.getLogger("wanpy").setLevel(logging.INFO)
gen = dict(negative_prompt="", width=r["width"], height=r["height"], num_frames=r["frames"], steps=r["steps"],
           cfg_scale=r["cfg_scale"], flow_shift=r["flow_shift"], sample_method=r["sample_method"],
           scheduler=r["scheduler"], progress=False)
t = time.perf_counter()
clips = []
if a["clips"] == 1:
    # one job, one clip: the one-shot function, which frees each model when the generation is
    # done with it (as sd-cli does)
    v = wanpy.generate_video(r["prompt"], diffusion_model=a["diffusion_model"], vae=a["vae"],
                             n_threads=r["threads"], seed=r["seed"], **gen)
    t_pipeline = time.perf_counter() - t - v.timings.total  # set-up: checks, pre-flight, load, free
    np.save(f"{a['out']}_0.npy", v.frames)
    clips.append({"wall_s": v.timings.total, "sampling": v.timings.sampling, "vae_decode": v.timings.vae_decode,
                  "text_encoding": v.timings.text_encoding, "seed": v.seed})
    load = v.timings.load
else:
    with wanpy.WanPipeline(a["diffusion_model"], a["vae"], n_threads=r["threads"]) as pipe:
        t_pipeline = time.perf_counter() - t
        for i in range(a["clips"]):
            t = time.perf_counter()
            v = pipe.generate_video(r["prompt"], seed=r["seed"] + i, **gen)
            wall = time.perf_counter() - t
            np.save(f"{a['out']}_{i}.npy", v.frames)
            clips.append({"wall_s": wall, "sampling": v.timings.sampling, "vae_decode": v.timings.vae_decode,
                          "text_encoding": v.timings.text_encoding, "seed": v.seed})
        load = pipe.load_seconds
print(json.dumps({"import_s": t_import, "rss_after_import_bytes": rss_import, "pipeline_s": t_pipeline,
                  "load_s": load, "tensor_load_s": sum(tensor_load), "clips": clips}))
"""


def run_wanpy(models: Any, req: Request, workdir: Path, tag: str, clips: int = 1) -> Run:
    """One fresh Python process: import wanpy and generate ``clips`` clips: one with the one-shot
    ``wanpy.generate_video``, several with one ``WanPipeline``."""
    out = workdir / tag
    args = {"diffusion_model": str(models.diffusion_model), "vae": str(models.vae), "request": asdict(req),
            "clips": clips, "out": str(out)}
    wall, usage, text = run_measured([sys.executable, "-c", _WANPY_CHILD, json.dumps(args)], env=child_env())
    report = json.loads(next(line for line in reversed(text.splitlines()) if line.startswith("{")))
    frames = []
    for i in range(clips):
        path = Path(f"{out}_{i}.npy")
        frames.append(np.load(path))
        path.unlink()
    c = report["clips"]
    phases = {"load": report["tensor_load_s"], "new_sd_ctx": report["load_s"], "pipeline": report["pipeline_s"],
              "import": report["import_s"],
              "sampling": sum(x["sampling"] for x in c), "vae_decode": sum(x["vae_decode"] for x in c),
              "generate": sum(x["wall_s"] for x in c)}
    return Run("wanpy", wall, peak_rss(usage), usage.ru_utime + usage.ru_stime, phases, frames, clips=c,
               extra={"rss_after_import_bytes": report["rss_after_import_bytes"]})


def child_env() -> dict[str, str]:
    """The environment of wanpy's child processes: they import the wanpy this process imports."""
    import wanpy

    env = dict(os.environ)
    where = str(Path(wanpy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    return env


# A child's ru_maxrss keeps the parent's high-water mark from before exec (Linux), which
# hides anything smaller than this process; the peak of a small child is its own VmHWM.
_PRINT_VMHWM = 'print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))'


def run_import_only() -> tuple[float, int]:
    """A fresh interpreter that only imports wanpy: its wall time and peak RSS."""
    wall, _, out = run_measured([sys.executable, "-c", "import wanpy\n" + _PRINT_VMHWM], env=child_env())
    return wall, int(out.split()[-1]) * 1024


def run_bare_interpreter() -> tuple[float, int]:
    wall, _, out = run_measured([sys.executable, "-c", _PRINT_VMHWM])
    return wall, int(out.split()[-1]) * 1024


# --- comparing frames -------------------------------------------------------------
def compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    if ours.shape != theirs.shape:
        return {"identical": False, "shapes": [list(ours.shape), list(theirs.shape)]}
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    return {"identical": bool(not diff.any()), "max_abs_diff": int(diff.max()),
            "values_differing": float((diff > 0).mean()),
            "frames_differing": [int(i) for i in np.flatnonzero(diff.reshape(len(diff), -1).max(axis=1))]}


# --- the benchmark ----------------------------------------------------------------
def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def warm_page_cache(models: Any) -> None:
    """Read the model files once, so that no measured run pays for the disk."""
    for path in (models.diffusion_model, models.vae):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def sdcpp_version(tool: Path) -> str:
    try:
        return subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError as exc:
        return f"unknown ({exc})"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench(args: argparse.Namespace, req: Request, tool: Path | None) -> dict[str, Any]:
    from wanpy.testing import cached_model_set

    models = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    warm_page_cache(models)
    result: dict[str, Any] = {
        "request": asdict(req), "runs": args.runs, "clips": args.clips, "thread_counts": args.thread_counts,
        "models": {"diffusion_model": str(models.diffusion_model), "vae": str(models.vae),
                   "variant": models.variant, "dtype": models.dtype, "text_encoder": None},
        "sdcpp_cli": str(tool) if tool else None, "sdcpp_version": sdcpp_version(tool) if tool else None,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_average_start": os.getloadavg()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    comparisons: list[dict[str, Any]] = []

    def compare_runs(section: str, ours: Run, theirs: Run, label: str) -> None:
        for i, (a, b) in enumerate(zip(ours.frames, theirs.frames, strict=True)):
            comparisons.append({"section": section, "run": label, "clip": i, **compare(a, b)})

    with tempfile.TemporaryDirectory(prefix="bench_generation_") as tmp:
        workdir = Path(tmp)

        # 2. overhead (and 1. identity on every pair), alternating which engine goes first
        wanpy_runs: list[Run] = []
        cli_runs: list[Run] = []
        for i in range(args.runs):
            order = ("wanpy", "sd-cli") if i % 2 == 0 else ("sd-cli", "wanpy")
            for engine in order:
                if engine == "wanpy":
                    wanpy_runs.append(run_wanpy(models, req, workdir, f"w{i}"))
                    progress(f"overhead run {i + 1}/{args.runs}: wanpy {wanpy_runs[-1].wall_s:.1f} s")
                elif tool:
                    cli_runs.append(run_sdcpp(tool, models, req, workdir, f"c{i}"))
                    progress(f"overhead run {i + 1}/{args.runs}: sd-cli {cli_runs[-1].wall_s:.1f} s")
            if tool:
                compare_runs("overhead", wanpy_runs[-1], cli_runs[-1], f"run {i + 1}")
        imports = [run_import_only() for _ in range(args.runs)]
        bare = [run_bare_interpreter() for _ in range(args.runs)]
        result["overhead"] = overhead_summary(wanpy_runs, cli_runs, imports, bare)
        result["overhead"]["wanpy_runs"] = [r.summary() for r in wanpy_runs]
        result["overhead"]["sdcpp_runs"] = [r.summary() for r in cli_runs]

        # 3. load once, generate many: half of the sd-cli runs before the wanpy process, half after
        if args.clips > 1:
            singles: list[Run] = []

            def cli_clip(i: int) -> None:
                if i == 0 and args.smoke:
                    singles.append(cli_runs[0])  # smoke: the same request was just run; saves seconds
                    return
                singles.append(run_sdcpp(tool, models, replace(req, seed=req.seed + i), workdir, f"m{i}"))
                progress(f"sd-cli clip {i + 1}/{args.clips}: {singles[-1].wall_s:.1f} s")

            if tool:
                for i in range(args.clips // 2):
                    cli_clip(i)
            many = run_wanpy(models, req, workdir, "many", clips=args.clips)
            progress(f"{args.clips} clips in one WanPipeline: {many.wall_s:.1f} s")
            if tool:
                for i in range(args.clips // 2, args.clips):
                    cli_clip(i)
                for i, single in enumerate(singles):
                    comparisons.append({"section": "many", "run": f"seed {req.seed + i}", "clip": i,
                                        **compare(many.frames[i], single.frames[0])})
            result["many"] = many_summary(many, singles, wanpy_runs)

        # 4. threads
        result["threads"] = []
        for n in args.thread_counts:
            if n == req.threads:
                ours, theirs = wanpy_runs, cli_runs
            else:
                r = replace(req, threads=n)
                ours = [run_wanpy(models, r, workdir, f"t{n}")]
                progress(f"{n} thread(s): wanpy {ours[0].wall_s:.1f} s")
                theirs = []
                if tool:
                    theirs = [run_sdcpp(tool, models, r, workdir, f"u{n}")]
                    progress(f"{n} thread(s): sd-cli {theirs[0].wall_s:.1f} s")
                    compare_runs("threads", ours[0], theirs[0], f"{n} threads")
            for engine, runs in (("wanpy", ours), ("sd-cli", theirs)):
                if runs:
                    result["threads"].append(threads_row(engine, n, req, runs))

    result["identity"] = {"pairs": comparisons,
                          "all_identical": bool(comparisons) and all(c["identical"] for c in comparisons)}
    result["machine"]["load_average_end"] = os.getloadavg()
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return result


def overhead_summary(wanpy_runs: list[Run], cli_runs: list[Run], imports: list[tuple[float, int]],
                     bare: list[tuple[float, int]]) -> dict[str, Any]:
    def stats(runs: list[Run]) -> dict[str, float]:
        keys = sorted({k for r in runs for k in r.phases})
        return {"wall_s": median([r.wall_s for r in runs]), "cpu_s": median([r.cpu_s for r in runs]),
                "peak_rss_bytes": median([r.peak_rss_bytes for r in runs]),
                **{f"{k}_s": median([r.phases[k] for r in runs if k in r.phases]) for k in keys}}

    out: dict[str, Any] = {"wanpy": stats(wanpy_runs)}
    out["wanpy"]["rss_after_import_bytes"] = median([r.extra["rss_after_import_bytes"] for r in wanpy_runs])
    out["import_only"] = {"wall_s": median([w for w, _ in imports]), "peak_rss_bytes": median([m for _, m in imports]),
                          "bare_interpreter_wall_s": median([w for w, _ in bare]),
                          "bare_interpreter_peak_rss_bytes": median([m for _, m in bare])}
    if cli_runs:
        out["sdcpp"] = stats(cli_runs)
        out["ratio"] = {"wall": out["wanpy"]["wall_s"] / out["sdcpp"]["wall_s"],
                        "peak_rss": out["wanpy"]["peak_rss_bytes"] / out["sdcpp"]["peak_rss_bytes"],
                        "wall_per_pair": [w.wall_s / c.wall_s for w, c in zip(wanpy_runs, cli_runs, strict=True)],
                        "peak_rss_per_pair": [w.peak_rss_bytes / c.peak_rss_bytes
                                              for w, c in zip(wanpy_runs, cli_runs, strict=True)]}
        out["targets"] = {"wall": TARGET_TIME_RATIO, "peak_rss": TARGET_RSS_RATIO}
    return out


def many_summary(many: Run, singles: list[Run], wanpy_runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {"wanpy_process_wall_s": many.wall_s, "wanpy_peak_rss_bytes": many.peak_rss_bytes,
                           "wanpy_clip_wall_s": [c["wall_s"] for c in many.clips],
                           "wanpy_pipeline_s": many.phases["pipeline"], "wanpy_import_s": many.phases["import"],
                           "wanpy_single_clip_process_wall_s": median([r.wall_s for r in wanpy_runs])}
    if singles:
        total = sum(r.wall_s for r in singles)
        out.update({"sdcpp_runs_wall_s": [r.wall_s for r in singles], "sdcpp_total_wall_s": total,
                    "sdcpp_peak_rss_bytes": max(r.peak_rss_bytes for r in singles),
                    "ratio_wall": many.wall_s / total})
    return out


def threads_row(engine: str, n: int, req: Request, runs: list[Run]) -> dict[str, Any]:
    sampling = median([r.phases["sampling"] for r in runs])
    wall = median([r.wall_s for r in runs])
    generate = median([r.phases["generate"] for r in runs])
    return {"engine": engine, "threads": n, "runs": len(runs), "seconds_per_step": sampling / req.steps,
            "sampling_s": sampling, "vae_decode_s": median([r.phases["vae_decode"] for r in runs]),
            "job_wall_s": wall, "job_fps": req.frames / wall, "generation_fps": req.frames / generate}


# --- output -----------------------------------------------------------------------
def mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    req = result["request"]
    lines = [f"Request: {req['width']}x{req['height']}, {req['frames']} frames, {req['steps']} steps, "
             f"{req['sample_method']}/{req['scheduler']}, flow shift {req['flow_shift']}, cfg {req['cfg_scale']}, "
             f"seed {req['seed']}, {req['threads']} threads; random-weight Wan2.1-T2V-1.3B "
             f"({result['models']['dtype']}), no text encoder.",
             f"Baseline: {result['sdcpp_version'] or 'none (sd-cli not measured)'}", ""]

    ident = result["identity"]
    if ident["pairs"]:
        lines += ["### Same engine, same answer", "",
                  "| pair | identical | max abs diff | values differing |", "|---|---|---:|---:|"]
        for c in ident["pairs"]:
            lines.append(f"| {c['section']}, {c['run']}, clip {c['clip']} | {'yes' if c['identical'] else 'NO'} | "
                         f"{c.get('max_abs_diff', '-')} | {100 * c.get('values_differing', 1):.2f}% |")
        lines += ["", f"All frames identical: {'yes' if ident['all_identical'] else 'NO'}", ""]

    o = result["overhead"]
    w = o["wanpy"]
    lines += [f"### Overhead: one job per process, median of {result['runs']}", ""]
    if "sdcpp" in o:
        s, r = o["sdcpp"], o["ratio"]
        lines += ["| | wanpy | sd-cli | wanpy / sd-cli | target |", "|---|---:|---:|---:|---:|",
                  f"| wall s | {w['wall_s']:.2f} | {s['wall_s']:.2f} | **{r['wall']:.3f}** "
                  f"| <= {TARGET_TIME_RATIO:.2f} |",
                  f"| peak RSS MiB | {mb(w['peak_rss_bytes'])} | {mb(s['peak_rss_bytes'])} | **{r['peak_rss']:.3f}** "
                  f"| <= {TARGET_RSS_RATIO:.2f} |",
                  f"| CPU s | {w['cpu_s']:.2f} | {s['cpu_s']:.2f} | {w['cpu_s'] / s['cpu_s']:.3f} | |",
                  f"| tensor loading s (sd.cpp log) | {w['load_s']:.2f} | {s.get('load_s', float('nan')):.2f} | "
                  f"{w['load_s'] / s['load_s']:.3f} | |",
                  f"| sampling s | {w['sampling_s']:.2f} | {s['sampling_s']:.2f} | "
                  f"{w['sampling_s'] / s['sampling_s']:.3f} | |",
                  f"| VAE decode s | {w['vae_decode_s']:.2f} | {s['vae_decode_s']:.2f} | "
                  f"{w['vae_decode_s'] / s['vae_decode_s']:.3f} | |",
                  "", "Per-pair ratios (wall): " + ", ".join(f"{x:.3f}" for x in r["wall_per_pair"]),
                  "Per-pair ratios (peak RSS): " + ", ".join(f"{x:.3f}" for x in r["peak_rss_per_pair"]), ""]
    else:
        lines += [f"wanpy: wall {w['wall_s']:.2f} s, peak RSS {mb(w['peak_rss_bytes'])} MiB (no sd-cli baseline)", ""]
    i = o["import_only"]
    lines += [f"`import wanpy` inside the job: {w['import_s'] * 1000:.0f} ms; "
              f"RSS after it {mb(w['rss_after_import_bytes'])} MiB. A process that only imports wanpy: "
              f"{i['wall_s']:.2f} s, {mb(i['peak_rss_bytes'])} MiB (bare interpreter: "
              f"{i['bare_interpreter_wall_s']:.2f} s, "
              f"{mb(i['bare_interpreter_peak_rss_bytes'])} MiB). Set-up of the one-shot generate_video() (header checks, pre-flight, load, free): "
              f"{w['pipeline_s']:.2f} s, of which new_sd_ctx {w['new_sd_ctx_s']:.2f} s.", ""]

    if "many" in result:
        m = result["many"]
        lines += [f"### Load once, generate {result['clips']} clips", ""]
        clip_walls = ", ".join(f"{x:.2f}" for x in m["wanpy_clip_wall_s"])
        if "ratio_wall" in m:
            lines += ["| | wall s | peak RSS MiB |", "|---|---:|---:|",
                      f"| wanpy, one process, one WanPipeline | {m['wanpy_process_wall_s']:.2f} | "
                      f"{mb(m['wanpy_peak_rss_bytes'])} |",
                      f"| sd-cli, {result['clips']} processes | {m['sdcpp_total_wall_s']:.2f} | "
                      f"{mb(m['sdcpp_peak_rss_bytes'])} |",
                      f"| ratio wanpy / sd-cli | **{m['ratio_wall']:.3f}** | |", ""]
        lines += [f"wanpy per clip (s): {clip_walls}; its pipeline set-up {m['wanpy_pipeline_s']:.2f} s, "
                  f"import {m['wanpy_import_s']:.2f} s.", ""]

    lines += ["### Threads", "", "| engine | threads | s / sampling step | sampling s | VAE decode s | job wall s | "
              "job frames/s | generation frames/s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in result["threads"]:
        lines.append(f"| {t['engine']} | {t['threads']} | {t['seconds_per_step']:.2f} | {t['sampling_s']:.2f} | "
                     f"{t['vae_decode_s']:.2f} | {t['job_wall_s']:.2f} | {t['job_fps']:.3f} | "
                     f"{t['generation_fps']:.3f} |")
    la0, la1 = result["machine"]["load_average_start"][0], result["machine"]["load_average_end"][0]
    lines += ["", f"{result['machine']['cpu_count']} CPUs, load average {la0:.2f} at the start, {la1:.2f} at the end "
              f"({result['started']} to {result['finished']})."]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    """Wall time and peak RSS, wanpy vs sd-cli, as one small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = result["overhead"]
    groups = [("one job\n(load + 1 clip)", o["wanpy"]["wall_s"], o["sdcpp"]["wall_s"])]
    if "many" in result and "sdcpp_total_wall_s" in result["many"]:
        m = result["many"]
        groups.append((f"{result['clips']} clips\n(1 process vs {result['clips']})",
                       m["wanpy_process_wall_s"], m["sdcpp_total_wall_s"]))
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2, 1, 1.4]})
    x = np.arange(len(groups))
    ax1.bar(x - 0.2, [g[1] for g in groups], 0.4, label="wanpy", color="#3b7dd8")
    ax1.bar(x + 0.2, [g[2] for g in groups], 0.4, label="sd-cli", color="#aaaaaa")
    ax1.set_xticks(x, [g[0] for g in groups])
    ax1.set_ylim(top=1.15 * max(max(g[1], g[2]) for g in groups))
    ax1.set_ylabel("wall seconds (whole processes)")
    ax1.set_title("wall time, labels: wanpy / sd-cli", fontsize=9)
    ax1.legend(frameon=False)
    for xi, g in zip(x, groups):
        ax1.annotate(f"{g[1] / g[2]:.2f}x", (xi, max(g[1], g[2])), ha="center", va="bottom", fontsize=9)
    ax2.bar([0, 1], [o["wanpy"]["peak_rss_bytes"] / 2**20, o["sdcpp"]["peak_rss_bytes"] / 2**20],
            color=["#3b7dd8", "#aaaaaa"])
    ax2.set_xticks([0, 1], ["wanpy", "sd-cli"])
    ax2.set_ylabel("peak RSS MiB")
    ax2.set_title(f"wanpy / sd-cli {o['ratio']['peak_rss']:.2f}x", fontsize=9)
    threads = result["threads"]
    for engine, color in (("wanpy", "#3b7dd8"), ("sd-cli", "#aaaaaa")):
        rows = sorted((t["threads"], t["seconds_per_step"]) for t in threads if t["engine"] == engine)
        if rows:
            ax3.plot([r[0] for r in rows], [r[1] for r in rows], "o-", color=color, label=engine)
    ax3.set_xlabel("threads")
    ax3.set_ylabel("s / sampling step")
    ax3.set_xticks(sorted({t["threads"] for t in threads}))
    ax3.set_ylim(bottom=0)
    ax3.set_title("sampling", fontsize=9)
    ax3.legend(frameon=False, fontsize=8)
    req = result["request"]
    fig.suptitle(f"wanpy vs sd-cli, random-weight Wan2.1-T2V-1.3B q4_0, {req['width']}x{req['height']}x"
                 f"{req['frames']}, {req['steps']} steps, CPU ({result['machine']['cpu_count']} cores, shared)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size must be WxH (e.g. 64x64), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    parser.add_argument("--chart", type=Path, help="write a PNG chart here (needs matplotlib and sd-cli)")
    parser.add_argument("--runs", type=int, default=5, help="alternated runs per engine for the overhead (default 5)")
    parser.add_argument("--size", type=parse_size, default=(64, 64), help="WxH (default 64x64)")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip, 4k+1 (default 5)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the overhead runs (default 2)")
    parser.add_argument("--thread-counts", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="thread counts of the threads section (default 1,2)")
    parser.add_argument("--clips", type=int, default=4, help="clips of the load-once section (default 4)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sdcpp-cli", type=Path, default=None,
                        help=f"sd.cpp's CLI (default: {DEFAULT_SDCPP_CLI.relative_to(ROOT)}, "
                             "built by bench/build_sdcpp_tools.sh)")
    parser.add_argument("--no-sdcpp", action="store_true", help="measure wanpy only")
    parser.add_argument("--from-json", type=Path, help="measure nothing: print the table (and --chart) of a saved "
                                                           "--json result")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny and quick (32x32, 1 frame, 1 step, cfg 1, 1 run, 2 clips whose first sd-cli "
                             "run is the overhead run, no extra thread counts): keeps the harness working, "
                             "measures nothing worth quoting")
    args = parser.parse_args(argv)

    if args.from_json:
        result = json.loads(args.from_json.read_text())
        print(markdown(result))
        if args.chart:
            chart(result, args.chart)
        return 0

    req = Request(width=args.size[0], height=args.size[1], frames=args.frames, steps=args.steps,
                  seed=args.seed, threads=args.threads)
    if args.smoke:
        req = replace(req, width=32, height=32, frames=1, steps=1, cfg_scale=1.0)
        args.runs, args.clips, args.thread_counts = 1, 2, [args.threads]
    if args.runs < 1 or args.clips < 1 or any(n < 1 for n in args.thread_counts):
        parser.error("--runs, --clips and --thread-counts must be positive")
    if args.frames % 4 != 1:
        parser.error(f"--frames must be 4k+1 (sd.cpp would silently use {(args.frames - 1) // 4 * 4 + 1})")
    if args.size[0] % 16 or args.size[1] % 16:
        parser.error("--size: width and height must be multiples of 16")

    tool: Path | None = None
    if not args.no_sdcpp:
        candidate = args.sdcpp_cli or DEFAULT_SDCPP_CLI
        if candidate.is_file() and os.access(candidate, os.X_OK):
            tool = candidate.resolve()
        elif args.sdcpp_cli is not None:
            parser.error(f"--sdcpp-cli {args.sdcpp_cli}: not an executable file")
        else:
            print(f"WARNING: {candidate} not found (run bench/build_sdcpp_tools.sh): measuring wanpy only, "
                  "no comparison with sd-cli", file=sys.stderr, flush=True)
    if args.chart and tool is None:
        parser.error("--chart needs sd-cli")

    result = bench(args, req, tool)
    result["smoke"] = args.smoke
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.chart:
        chart(result, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
