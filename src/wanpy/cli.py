"""The ``wanpy`` command line: info, preflight, generate, probe, demo.

User errors print one clear line (no traceback) and exit non-zero; ``--verbose``
shows sd.cpp's log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

EXIT_USAGE = 2
EXIT_DOES_NOT_FIT = 3  # an AllocationTooLargeError


def parse_bytes(text: str) -> int:
    """'4GiB', '4096MiB', '0xfffffffc', '4294967292' -> bytes."""
    from wanpy.units import parse_bytes as byte_count

    try:
        return byte_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 832x480, got {text!r}")
    return int(m.group(1)), int(m.group(2))


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


def _emit(args: argparse.Namespace, result: Any, text: str | None = None) -> None:
    """The command's result on stdout: one JSON document with --json, else its text."""
    if args.json:
        print(json.dumps(jsonable(result), indent=2))
    else:
        print(result if text is None else text)


def _cmd_info(args: argparse.Namespace) -> int:
    import wanpy

    _emit(args, wanpy.system_info())
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from wanpy.probe import probe_video

    _emit(args, probe_video(args.file))
    return 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    import wanpy

    width, height = args.size
    report = wanpy.preflight(args.model, width=width, height=height, num_frames=args.frames,
                             flash_attention=args.flash_attention, vae_tiling=args.vae_tiling,
                             text_encoder=args.text_encoder, vae=args.vae,
                             high_noise_diffusion_model=args.high_noise_diffusion_model,
                             clip_vision=args.clip_vision, offload_to_cpu=args.offload_to_cpu,
                             keep_vae_on_cpu=args.keep_vae_on_cpu, device=args.device,
                             max_allocation=args.max_allocation, total_memory=args.total_memory,
                             init_image=args.init_image, end_image=args.end_image)
    _emit(args, report)
    return 0 if report.fits else EXIT_DOES_NOT_FIT


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if args.size is not None:
        kwargs["width"], kwargs["height"] = args.size
    for name in ("fps", "steps", "cfg_scale", "flow_shift", "seed", "sample_method", "scheduler",
                 "high_noise_steps", "high_noise_cfg_scale", "moe_boundary", "negative_prompt", "init_image",
                 "end_image", "align"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    if args.frames is not None:
        kwargs["num_frames"] = args.frames
    if args.duration is not None:
        kwargs["duration"] = args.duration
    loras = [(path, mult, False) for path, mult in args.lora] + [(path, mult, True) for path, mult in
                                                                args.high_noise_lora]
    if loras:
        kwargs["loras"] = loras
    return kwargs


def parse_lora(text: str) -> tuple[str, float]:
    """PATH or PATH:MULTIPLIER (a path may itself contain ':')."""
    path, sep, mult = text.rpartition(":")
    if sep:
        try:
            return path, float(mult)
        except ValueError:
            pass
    return text, 1.0


def _cmd_generate(args: argparse.Namespace) -> int:
    import wanpy

    video = wanpy.generate_video(
        args.prompt, diffusion_model=args.diffusion_model, vae=args.vae, text_encoder=args.text_encoder,
        high_noise_diffusion_model=args.high_noise_diffusion_model, clip_vision=args.clip_vision,
        flash_attention=args.flash_attention, vae_tiling=args.vae_tiling, offload_to_cpu=args.offload_to_cpu,
        keep_vae_on_cpu=args.keep_vae_on_cpu, n_threads=args.threads, fit=args.fit,
        progress=not (args.no_progress or args.quiet), output=args.output,
        **_generation_kwargs(args))  # every value and the output path checked before loading
    from wanpy.probe import probe_video

    path = Path(args.output).absolute()
    info = probe_video(path)
    if args.json:
        _emit(args, {"output": path, "video": {"num_frames": video.num_frames, "width": video.width,
                                               "height": video.height, "fps": video.fps, "seed": video.seed},
                     "params": video.params, "timings": video.timings, "probe": info})
        return 0
    if args.quiet:
        print(path)
        return 0
    fit = video.params["fit"]
    if isinstance(fit, dict):
        chosen = ", ".join(f"{k}={v['chosen']}" for k, v in fit["changed"].items())
        print(f"fit auto: {chosen or 'fits as asked'}")
    print(video)
    print(f"wrote {path}")
    print(info)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import wanpy
    from wanpy.testing import cached_model_set

    print("wanpy demo: a random-weight Wan2.1-T2V-1.3B (real architecture, real file formats)")
    models = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    print(f"models: {models.diffusion_model}\n        {models.vae}")
    size, frames, steps = (args.size or (128, 96)), args.frames, args.steps
    print(wanpy.preflight(models.diffusion_model, vae=models.vae, width=size[0], height=size[1], num_frames=frames))
    print()
    video = wanpy.generate_video(
        "a red fox running through fresh snow, cinematic", diffusion_model=models.diffusion_model,
        vae=models.vae, width=size[0], height=size[1], num_frames=frames, steps=steps, seed=args.seed,
        progress=not (args.no_progress or args.quiet), output=args.output)  # output checked before the generation
    from wanpy.probe import probe_video

    path = Path(args.output).absolute()
    print(video)
    print(f"wrote {path}")
    print(probe_video(path))
    print("\nThese weights are random, so the frames are noise: the demo proves the whole path "
          "(load, sample, decode, encode) works on this machine.\nFor real videos, point `wanpy generate` "
          "at real Wan weights, e.g.\n  wanpy generate --diffusion-model wan2.1_t2v_1.3B_fp16.safetensors "
          "--vae wan_2.1_vae.safetensors --text-encoder umt5-xxl-encoder-Q8_0.gguf \\\n"
          "    --prompt \"a lovely cat\" --size 832x480 --frames 33 -o cat.webm")
    return 0


def _add_memory_options(p: argparse.ArgumentParser) -> None:
    """The WanPipeline options that change what is allocated (shared by preflight and generate)."""
    p.add_argument("--flash-attention", action="store_true")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument("--offload-to-cpu", action="store_true")
    p.add_argument("--keep-vae-on-cpu", action="store_true")


def _add_common_options(p: argparse.ArgumentParser, default: Any) -> None:
    """-v/-q/--json, before or after the subcommand (``default`` SUPPRESS on the subcommands, so that
    one given before it is kept)."""
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="show sd.cpp's and ggml's log")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress bars or warnings; print only the result")
    p.add_argument("--json", action="store_true", default=default,
                   help="print the result as one JSON document on stdout, and nothing else there "
                        "(info, preflight, probe, generate)")


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="wanpy", formatter_class=raw,
        description="Wan2.1/Wan2.2 video generation on stable-diffusion.cpp, in-process.",
        epilog="examples:\n  wanpy info\n  wanpy demo -o demo.webm\n"
               "  wanpy preflight wan2.x-t2v-14b --size 832x480 --frames 161 --max-allocation 4GiB\n"
               "  wanpy probe demo.webm")
    from wanpy._version import __version__

    parser.add_argument("--version", action="version", version=f"wanpy {__version__}")
    _add_common_options(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, argparse.SUPPRESS)  # after the subcommand too, without resetting it
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", parents=[common], formatter_class=raw,
                       help="backend, sd.cpp version, devices and their limits, environment report",
                       description="What this build is and what its devices can really do.",
                       epilog="example:\n  GGML_VK_VISIBLE_DEVICES=0 wanpy info")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("probe", parents=[common], formatter_class=raw, help="frame count, fps, size, duration, codec of a video",
                       description="Decode a video and report what it really holds.",
                       epilog="example:\n  wanpy probe fox.webm")
    p.add_argument("file")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("preflight", parents=[common], formatter_class=raw, help="what a generation allocates, and what would fit",
                       description="Predict every allocation of a generation from the model's header (or a "
                                   "preset), without loading weights.\nExit status 0 when it fits, 3 when it "
                                   "does not.\nPresets: wan2.1-t2v-1.3b, wan2.2-ti2v-5b, wan2.x-t2v-14b, "
                                   "wan2.1-i2v-14b, wan2.1-flf2v-14b, wan2.2-t2v-a14b, wan2.2-i2v-a14b\n"
                                   "(optionally :dtype, e.g. wan2.x-t2v-14b:q4_k; default f16).",
                       epilog="examples:\n  wanpy preflight wan2.x-t2v-14b --size 832x480 --frames 161 "
                              "--max-allocation 0xfffffffc\n  wanpy preflight wan2.1_t2v_1.3B.gguf --vae "
                              "wan_2.1_vae.safetensors --size 832x480 --frames 81 --flash-attention")
    p.add_argument("model", help="a Wan DiT file or a preset name")
    p.add_argument("--size", type=parse_size, metavar="WxH", required=True)
    p.add_argument("--frames", type=int, required=True, help="a 4k+1 count")
    p.add_argument("--vae")
    p.add_argument("--text-encoder", help="a umt5-xxl file or the preset umt5-xxl[:dtype]")
    p.add_argument("--high-noise-diffusion-model")
    p.add_argument("--clip-vision")
    p.add_argument("--init-image", action="store_true", help="an init image goes in")
    p.add_argument("--end-image", action="store_true", help="an end image goes in")
    _add_memory_options(p)
    p.add_argument("--device", type=int, help="device index (wanpy info)")
    p.add_argument("--max-allocation", type=parse_bytes, help="per-allocation ceiling, e.g. 4GiB or 0xfffffffc")
    p.add_argument("--total-memory", type=parse_bytes, help="device memory, e.g. 96GiB")
    p.set_defaults(func=_cmd_preflight)

    p = sub.add_parser("generate", parents=[common], formatter_class=raw, help="generate a video file",
                       description="Load the models, pre-flight, generate, write the file, probe it.",
                       epilog="example:\n  wanpy generate --diffusion-model wan2.1_t2v_1.3B.gguf --vae wan_2.1_vae."
                              "safetensors --text-encoder umt5-xxl-Q8_0.gguf \\\n    --prompt \"a fox in the snow\" "
                              "--size 832x480 --frames 81 --fps 16 -o fox.webm")
    p.add_argument("--diffusion-model", required=True)
    p.add_argument("--high-noise-diffusion-model")
    p.add_argument("--vae", required=True)
    p.add_argument("--text-encoder")
    p.add_argument("--clip-vision")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt")
    p.add_argument("--size", type=parse_size, metavar="WxH")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, help="a 4k+1 count (see --align)")
    g.add_argument("--duration", type=float, help="seconds, at --fps")
    p.add_argument("--align", choices=("down", "up"), help="round a non-4k+1 frame count explicitly")
    p.add_argument("--fps", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg-scale", type=float)
    p.add_argument("--flow-shift", type=float)
    p.add_argument("--sample-method")
    p.add_argument("--scheduler")
    p.add_argument("--seed", type=int)
    p.add_argument("--high-noise-steps", type=int)
    p.add_argument("--high-noise-cfg-scale", type=float)
    p.add_argument("--moe-boundary", type=float)
    p.add_argument("--init-image")
    p.add_argument("--end-image")
    p.add_argument("--lora", type=parse_lora, action="append", default=[], metavar="PATH[:MULTIPLIER]",
                   help="a LoRA (repeatable; multiplier 1.0 by default)")
    p.add_argument("--high-noise-lora", type=parse_lora, action="append", default=[], metavar="PATH[:MULTIPLIER]",
                   help="a LoRA for Wan2.2 A14B's high-noise expert (repeatable)")
    _add_memory_options(p)
    p.add_argument("--threads", type=int)
    p.add_argument("--fit", choices=("strict", "auto"), default="strict",
                   help="when the pre-flight says it does not fit: refuse (strict, default) or choose the "
                        "cheapest settings that fit (auto: flash attention, VAE tiling, VAE on CPU, offload; "
                        "never a smaller size or fewer frames)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--output", required=True, help=".webm, .mp4 or .gif")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("demo", parents=[common], formatter_class=raw, help="the whole path on random weights, no download",
                       description="Make (or reuse) a random-weight Wan2.1-T2V-1.3B, generate a short clip on "
                                   "this machine, write WebM and probe it.",
                       epilog="example:\n  wanpy demo -o demo.webm")
    p.add_argument("-o", "--output", default=str(Path(tempfile.gettempdir()) / "wanpy-demo.webm"))
    p.add_argument("--size", type=parse_size, metavar="WxH", help="default 128x96")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("--verbose and --quiet contradict each other")
    if args.json and args.command == "demo":
        parser.error("demo prints a walk-through, not a result: it has no --json")
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from wanpy.errors import WanpyError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("wanpy: interrupted", file=sys.stderr)
        return 130
    except WanpyError as exc:
        print(f"wanpy: error: {exc}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT if isinstance(exc, MemoryError) else 1
    except (ValueError, TypeError, OSError) as exc:
        print(f"wanpy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
