"""One prepared check on a real GPU: sampling and decode speed, sd.cpp's real buffers and the
device's real peak, next to the pre-flight's prediction for the same request.

Run by ``bench/gpu_check.sh`` (which installs the carried wheels and finds the CUDA libraries);
``--dry`` runs the same code on this machine's CPU build at tiny sizes, so the one GPU run is
not spent on a typo.

For each (frames, flash attention) case at one size, with a random-weight set of the kit (default
Wan2.1-T2V-1.3B, F16 DiT, its VAE, no text encoder), ``--steps`` steps:
  - seconds per sampling step and VAE-decode seconds (sd.cpp's own timings);
  - the compute buffers sd.cpp logs ("<runner> compute buffer size: X MB") against the pre-flight's
    predicted compute buffers, runner by runner;
  - the device's real peak: a thread polls ggml's device memory query (cudaMemGetInfo on CUDA)
    every few milliseconds while the pipeline loads and generates; peak use is the largest
    (total - free) minus the use before the pipeline loaded (the CUDA context already up), next
    to the pre-flight's predicted peak and largest single allocation;
  - nvidia-smi's per-process figure too, when ``--smi-log`` names its samples.
Writes ``gpu_check.json`` and ``gpu_check.md`` (a table) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import wanpy
from wanpy import _core, _logging
from wanpy.testing import make_model_set
from wanpy.testing.sdcpp_logs import compute_buffers

MiB = 1024**2


class DevicePoller:
    """Samples (total - free) of one ggml device every ``interval`` seconds in a thread."""

    def __init__(self, ggml_index: int, interval: float = 0.005) -> None:
        self.index, self.interval = ggml_index, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def used(self) -> int:
        d = next(d for d in _core.backend_devices() if d["ggml_index"] == self.index)
        return int(d["memory_total"]) - int(d["memory_free"])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.used()))
            self._stop.wait(self.interval)

    def __enter__(self) -> DevicePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, t0: float, t1: float) -> int:
        return max((u for t, u in self.samples if t0 <= t <= t1), default=0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = wanpy.system_info()
    print(info, flush=True)
    gpus = [d for d in info.devices if d.type in ("gpu", "igpu")]
    if not args.dry and not gpus:
        raise SystemExit("no GPU device: this check needs the GPU build on a GPU machine (or --dry)")
    device = gpus[0] if gpus else next(d for d in info.devices if d.type == "cpu")
    width, height = args.size
    t0 = time.perf_counter()
    models = make_model_set(Path(args.models), variant=args.variant, dtype=args.dtype, seed=0)
    write_s = time.perf_counter() - t0
    print(f"model set written in {write_s:.1f} s: {models.diffusion_model}", flush=True)

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "dry": args.dry,
        "host": platform.node(), "python": sys.version.split()[0], "backend": info.backend,
        "device": {"name": device.name, "description": device.description, "total_memory": device.total_memory},
        "sdcpp": info.sdcpp_version, "wanpy": info.wanpy_version, "model": f"{args.variant} {args.dtype}",
        "size": f"{width}x{height}", "steps": args.steps, "model_write_seconds": round(write_s, 2), "cases": [],
    }
    poller = DevicePoller(device.index)
    with poller:
        for fa in args.flash_attention:
            baseline = poller.used()
            load_lines: list[str] = []
            t_load = time.monotonic()
            with _logging.observe(lambda source, level, text: load_lines.append(text)):
                pipe = wanpy.WanPipeline(models.diffusion_model, models.vae, flash_attention=fa, device=device)
            with pipe:
                for frames in args.frames:
                    case = {"frames": frames, "flash_attention": fa}
                    report = wanpy.preflight(models.diffusion_model, vae=models.vae, width=width, height=height,
                                             num_frames=frames, flash_attention=fa, device=device, suggest=False)
                    lines: list[str] = []
                    marks: dict[str, float] = {}  # when sd.cpp logged the end of sampling and of the decode

                    def observe(source: str, level: str, text: str, lines: list[str] = lines,
                                marks: dict[str, float] = marks) -> None:
                        lines.append(text)
                        if text.startswith("sampling completed"):
                            marks["sampled"] = time.monotonic()
                        elif text.startswith("decode_first_stage completed"):
                            marks["decoded"] = time.monotonic()

                    t_gen = time.monotonic()
                    try:
                        with _logging.observe(observe):
                            video = pipe.generate_video("a red fox running through snow", width=width,
                                                        height=height, num_frames=frames, steps=args.steps,
                                                        seed=1, progress=False)
                    except Exception as exc:  # one case's failure is a finding, not the end of the check
                        case["error"] = f"{type(exc).__name__}: {exc}"
                        print(f"case {case}: FAILED", flush=True)
                        result["cases"].append(case)
                        continue
                    t_end = time.monotonic()
                    predicted = [(a.phase, a.buffer_total) for a in report.allocations if a.kind == "compute buffer"]
                    logged = compute_buffers(lines)
                    tm = video.timings
                    case.update({
                        "sampling_seconds": tm.sampling,
                        "seconds_per_step": None if tm.sampling is None else tm.sampling / args.steps,
                        "vae_decode_seconds": tm.vae_decode, "total_seconds": tm.total,
                        "predicted_peak": report.peak, "predicted_fits": report.fits,
                        "predicted_largest": {"name": report.largest.name, "phase": report.largest.phase,
                                              "bytes": report.largest.nbytes},
                        "predicted_compute_buffers": predicted, "logged_compute_buffers": logged,
                        "compute_buffers_equal": len(predicted) == len(logged) and all(
                            abs(p[1] - g[1]) <= 0.006 * MiB for p, g in zip(predicted, logged)),
                        "real_peak": poller.peak_between(t_load, t_end) - baseline,
                        "baseline_used": baseline, "samples": len(poller.samples),
                    })
                    case["peak_ratio"] = case["real_peak"] / report.peak if report.peak else None
                    # per phase, between the log lines that end sampling and the decode
                    t_vae, t_dec = marks.get("sampled", t_end), marks.get("decoded", t_end)
                    predicted_phase = {p.phase: p.device for p in report.phases}
                    case["phases"] = {
                        "sampling": {"predicted": predicted_phase.get("sampling"),
                                     "real": poller.peak_between(t_gen, t_vae) - baseline},
                        "VAE decode": {"predicted": predicted_phase.get("VAE decode"),
                                       "real": poller.peak_between(t_vae, t_dec) - baseline},
                    }
                    print(json.dumps(case), flush=True)
                    result["cases"].append(case)
    return result


def table(result: dict[str, Any]) -> str:
    rows = [
        f"{result['device']['description'] or result['device']['name']}, backend {result['backend']}, "
        f"{result['model']}, {result['size']}, {result['steps']} steps ({result['date']})",
        "",
        "| frames | flash attn | s/step | VAE decode s | predicted peak | real peak | real/predicted | "
        "predicted largest | compute buffers equal | beyond prediction: sampling / VAE decode |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for c in result["cases"]:
        if "error" in c:
            rows.append(f"| {c['frames']} | {'on' if c['flash_attention'] else 'off'} | {c['error']} ||||||")
            continue
        rows.append(
            f"| {c['frames']} | {'on' if c['flash_attention'] else 'off'} | {c['seconds_per_step']:.3f} | "
            f"{c['vae_decode_seconds']:.2f} | {c['predicted_peak'] / MiB:,.0f} MiB | {c['real_peak'] / MiB:,.0f} MiB | "
            f"{c['peak_ratio']:.3f} | {c['predicted_largest']['name']} {c['predicted_largest']['bytes'] / MiB:,.0f} MiB | "
            f"{'yes' if c['compute_buffers_equal'] else 'NO'} | "
            + " / ".join(f"{(v['real'] - v['predicted']) / MiB:+,.0f} MiB" if v["predicted"] else "-"
                         for v in c["phases"].values()) + " |")
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--dry", action="store_true", help="CPU build, tiny sizes: test this script")
    ap.add_argument("--models", help="where to write the model set (default: a temporary folder)")
    ap.add_argument("--variant", default="wan2.1-t2v-1.3b", help="the kit's model (wanpy.testing.VARIANTS)")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--size", help="WxH (default: 832x480; --dry: 64x48)")
    ap.add_argument("--frames", type=int, nargs="+", help="frame counts (default: 33 81; --dry: 5 9)")
    ap.add_argument("--flash-attention", choices=("off", "on"), nargs="+", default=["off", "on"])
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x")) if args.size else (64, 48) if args.dry else (832, 480)
    args.frames = args.frames or ((5, 9) if args.dry else (33, 81))
    args.flash_attention = [fa == "on" for fa in args.flash_attention]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args.models = args.models or tmp
        result = run(args)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    text = table(result)
    (out / "gpu_check.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
