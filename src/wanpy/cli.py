"""The ``wanpy`` command line: info, preflight, generate, probe, batch, serve, demo (arguments: ``wanpy.cli_options``).

User errors print one clear line (no traceback) and exit non-zero; ``--json`` prints a command's
result as one JSON document on stdout and nothing else there; ``--verbose`` shows sd.cpp's log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from wanpy.cli_options import build_parser, parse_lora

__all__ = ["EXIT_DOES_NOT_FIT", "EXIT_USAGE", "jsonable", "main", "parse_lora"]

EXIT_USAGE = 2
EXIT_DOES_NOT_FIT = 3  # an AllocationTooLargeError


def jsonable(value: Any) -> Any:
    """Results (dataclasses, paths, fractions, tuples, numpy scalars) as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (Path, Fraction)):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _emit(args: argparse.Namespace, result: Any) -> None:
    """The command's result on stdout: one JSON document with --json, else its text."""
    print(json.dumps(jsonable(result), indent=2) if args.json else result)


def _cmd_info(args: argparse.Namespace) -> int:
    import wanpy

    _emit(args, wanpy.system_info())
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from wanpy.probe import probe_video

    _emit(args, probe_video(args.file))
    return 0


def _memory_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"flash_attention": args.flash_attention, "offload_to_cpu": args.offload_to_cpu,
            "keep_vae_on_cpu": args.keep_vae_on_cpu, "device": args.device, "max_vram": args.max_vram}


def _cmd_preflight(args: argparse.Namespace) -> int:
    import wanpy

    if args.cache is None and (args.cfg_scale is not None or args.high_noise_cfg_scale is not None):
        raise ValueError("--cfg-scale and --high-noise-cfg-scale change the pre-flight only with --cache MODE")
    width, height = args.size
    report = wanpy.preflight(args.model, width=width, height=height, num_frames=args.frames,
                             vae_tiling=args.vae_tiling, tile_size=args.tile_size, tile_overlap=args.tile_overlap,
                             text_encoder=args.text_encoder, vae=args.vae,
                             high_noise_diffusion_model=args.high_noise_diffusion_model,
                             clip_vision=args.clip_vision, max_allocation=args.max_allocation,
                             total_memory=args.total_memory, init_image=args.init_image, end_image=args.end_image,
                             preview=args.preview, tiny_vae=args.tiny_vae, tiny_vae_use=args.tiny_vae_use,
                             cache=_step_cache(args), cfg_scale=args.cfg_scale,
                             high_noise_cfg_scale=args.high_noise_cfg_scale, **_memory_kwargs(args))
    _emit(args, report)
    return 0 if report.fits else EXIT_DOES_NOT_FIT


# generate's options that go to the request as they are (None: not given)
_REQUEST_OPTIONS = ("fps", "steps", "cfg_scale", "flow_shift", "seed", "sample_method", "scheduler",
                    "high_noise_steps", "high_noise_cfg_scale", "high_noise_sample_method", "high_noise_scheduler",
                    "moe_boundary", "negative_prompt", "init_image", "end_image", "align", "tile_size", "preview",
                    "preview_every", "interpolate", "control_video", "vace_strength", "reference_image")


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {name: getattr(args, name) for name in _REQUEST_OPTIONS
                              if getattr(args, name) is not None}
    if args.size is not None:
        kwargs["width"], kwargs["height"] = args.size
    if args.frames is not None:
        kwargs["num_frames"] = args.frames
    if args.duration is not None:
        kwargs["duration"] = args.duration
    if args.tile_overlap != 0.5:
        kwargs["tile_overlap"] = args.tile_overlap
    loras = [(path, mult, False) for path, mult in args.lora] + [(path, mult, True) for path, mult in
                                                                args.high_noise_lora]
    if loras:
        kwargs["loras"] = loras
    cache = _step_cache(args)
    if cache is not None:
        kwargs["cache"] = cache
    return kwargs


def _step_cache(args: argparse.Namespace) -> Any:
    """--cache MODE with its --cache-option fields, as a wanpy.StepCache (None without --cache)."""
    if args.cache is None:
        if args.cache_option:
            raise ValueError("--cache-option needs --cache MODE")
        return None
    from wanpy.cache import parse_cache_options

    return parse_cache_options(args.cache, args.cache_option)


def _preview_writer(args: argparse.Namespace) -> Callable[[Any], None] | None:
    """With --preview: a callback writing each preview frame to --preview-dir as PNG."""
    if args.preview is None:
        if args.preview_dir is not None:
            raise ValueError("--preview-dir needs --preview proj|vae|tae")
        return None
    folder = args.preview_dir
    if folder is None:
        raise ValueError("--preview needs --preview-dir, the folder its PNGs go to")
    if not folder.is_dir():
        raise FileNotFoundError(f"--preview-dir: no such folder: {str(folder)!r}")

    def write(progress: Any) -> None:
        from PIL import Image

        if progress.preview is not None:
            for i, frame in enumerate(progress.preview):
                Image.fromarray(frame).save(folder / f"{progress.phase}-step{progress.step:04d}-frame{i:03d}.png")

    return write


def _cmd_generate(args: argparse.Namespace) -> int:
    import wanpy
    from wanpy.encode import check_output
    from wanpy.probe import probe_video

    check_output(args.output, codec=args.codec, quality=args.quality, fps=args.interpolate or args.fps)
    video = wanpy.generate_video(
        args.prompt, diffusion_model=args.diffusion_model, vae=args.vae, text_encoder=args.text_encoder,
        high_noise_diffusion_model=args.high_noise_diffusion_model, clip_vision=args.clip_vision,
        vae_tiling=args.vae_tiling, n_threads=args.threads, fit=args.fit, callback=_preview_writer(args),
        progress=not (args.no_progress or args.quiet), mmap=args.mmap, vae_conv_direct=args.vae_conv_direct,
        tiny_vae=args.tiny_vae, tiny_vae_use=args.tiny_vae_use,
        **_memory_kwargs(args),
        **_generation_kwargs(args))  # every value checked before loading
    path = video.save(args.output, codec=args.codec, quality=args.quality) or Path(args.output)
    info = probe_video(path)
    if args.json:
        _emit(args, {"output": path, "video": {"num_frames": video.num_frames, "width": video.width,
                                               "height": video.height, "fps": video.fps, "seed": video.seed,
                                               "model_evaluations": video.model_evaluations,
                                               "cached_evaluations": video.cached_evaluations},
                     "params": video.params, "timings": video.timings, "probe": info})
    elif args.quiet:
        print(path)
    else:
        fit = video.params["fit"]
        if isinstance(fit, dict):
            chosen = ", ".join(f"{k}={v['chosen']}" for k, v in fit["changed"].items())
            print(f"fit auto: {chosen or 'fits as asked'}")
        print(f"{video}\nwrote {path}\n{info}")
        if video.request is not None and video.request.cache is not None:
            print(f"step cache {video.request.cache.mode}: {video.cached_evaluations} of "
                  f"{(video.model_evaluations or 0) + (video.cached_evaluations or 0)} model evaluations from the cache")
    return 0


def _pipeline_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """WanPipeline's files and load settings, from batch's or serve's options."""
    out: dict[str, Any] = {
        "diffusion_model": args.diffusion_model, "vae": args.vae, "text_encoder": args.text_encoder,
        "high_noise_diffusion_model": args.high_noise_diffusion_model, "clip_vision": args.clip_vision,
        "flash_attention": args.flash_attention, "vae_tiling": args.vae_tiling, "offload_to_cpu": args.offload_to_cpu,
        "keep_vae_on_cpu": args.keep_vae_on_cpu, "mmap": args.mmap, "tiny_vae": args.tiny_vae, "max_vram": args.max_vram,
        "tiny_vae_use": args.tiny_vae_use}
    if args.threads is not None:
        out["n_threads"] = args.threads
    return out


def _read_requests(source: str) -> list[dict[str, Any]]:
    """A JSON-lines file of requests: one object a line, no blank line (request N is line N+1)."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{source} line {number}: expected a JSON object with a prompt, got "
                             f"{type(value).__name__}")
        out.append(value)
    return out


def _cmd_batch(args: argparse.Namespace) -> int:
    from wanpy.distributed import BatchInterrupted, generate_batch

    resources = {}
    if args.gpus_per_worker is not None or args.cpus_per_worker is None:
        resources["GPU"] = 1.0 if args.gpus_per_worker is None else args.gpus_per_worker
    if args.cpus_per_worker is not None:
        resources["CPU"] = args.cpus_per_worker
    results = generate_batch(_read_requests(args.requests), models=_pipeline_arguments(args), num_workers=args.workers,
                             resources_per_worker={k: v for k, v in resources.items() if v},
                             output_dir=args.output_dir, ray_address=args.ray_address)  # every line checked here
    failed = 0
    try:
        for result in results:
            failed += not result.ok
            print(json.dumps(jsonable(result.to_dict())), flush=True)
    except BatchInterrupted as exc:
        for result in exc.results:
            print(json.dumps(jsonable(result.to_dict())), flush=True)
        print(f"wanpy: {exc}", file=sys.stderr)
        return 130
    return 1 if failed else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from wanpy.serve import check_bind, run

    api_key = args.api_key if args.api_key is not None else os.environ.get("WANPY_API_KEY") or None
    check_bind(args.host, api_key)  # before the models load
    models = {**_pipeline_arguments(args), "device": args.device}
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    run(models, host=args.host, port=args.port, api_key=api_key, log_level=level, max_queue=args.max_queue,
        results_dir=args.results_dir, ttl_seconds=args.result_ttl, quota_bytes=args.results_quota)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import wanpy
    from wanpy.probe import probe_video
    from wanpy.testing import cached_model_set

    print("wanpy demo: a random-weight Wan2.1-T2V-1.3B (real architecture, real file formats)")
    models = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    print(f"models: {models.diffusion_model}\n        {models.vae}")
    (width, height), frames, steps = args.size, args.frames, args.steps
    print(wanpy.preflight(models.diffusion_model, vae=models.vae, width=width, height=height, num_frames=frames))
    print()
    video = wanpy.generate_video(
        "a red fox running through fresh snow, cinematic", diffusion_model=models.diffusion_model,
        vae=models.vae, width=width, height=height, num_frames=frames, steps=steps, seed=args.seed,
        progress=not (args.no_progress or args.quiet), output=args.output)  # output checked before the generation
    path = Path(args.output).absolute()
    print(f"{video}\nwrote {path}\n{probe_video(path)}")
    print("\nThese weights are random, so the frames are noise: the demo proves the whole path "
          "(load, sample, decode, encode) works on this machine.\nFor real videos, point `wanpy generate` "
          "at real Wan weights, e.g.\n  wanpy generate --diffusion-model wan2.1_t2v_1.3B_fp16.safetensors "
          "--vae wan_2.1_vae.safetensors --text-encoder umt5-xxl-encoder-Q8_0.gguf \\\n"
          "    --prompt \"a lovely cat\" --size 832x480 --frames 33 -o cat.webm")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "info": _cmd_info, "probe": _cmd_probe, "preflight": _cmd_preflight, "generate": _cmd_generate,
    "batch": _cmd_batch, "serve": _cmd_serve, "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("--verbose and --quiet contradict each other")
    if args.json and args.command == "demo":
        parser.error("demo prints a walk-through, not a result: it has no --json")
    if args.json and args.command in ("batch", "serve"):
        parser.error(f"{args.command} prints JSON lines: it has no --json")
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from wanpy.errors import WanpyError

    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("wanpy: interrupted", file=sys.stderr)
        return 130
    except WanpyError as exc:
        print(f"wanpy: error: {exc}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT if isinstance(exc, MemoryError) else 1
    except (ValueError, TypeError, OSError) as exc:
        print(f"wanpy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
