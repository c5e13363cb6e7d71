"""The ``wanpy`` command line's arguments: every command, its options, their help, defaults and choices.

The commands themselves are in ``wanpy.cli``. Option values are only parsed here; what they
mean is checked by the API they go to (a ``GenerationRequest`` for ``generate``).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "parse_bytes", "parse_lora", "parse_size"]

_PRESETS = ("wan2.1-t2v-1.3b, wan2.2-ti2v-5b, wan2.x-t2v-14b, wan2.1-i2v-14b, wan2.1-flf2v-14b, wan2.2-t2v-a14b, "
            "wan2.2-i2v-a14b")
FAMILY_DEFAULT = "the model family's published value"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; an option's default shown where it has one its help does not say."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or action.nargs == 0:
            return text
        shown = "x".join(map(str, default)) if isinstance(default, tuple) else default
        return f"{text} (default: {shown})"


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


def parse_lora(text: str) -> tuple[str, float]:
    """PATH or PATH:MULTIPLIER (a path may itself contain ':')."""
    path, sep, mult = text.rpartition(":")
    if sep:
        try:
            return path, float(mult)
        except ValueError:
            pass
    return text, 1.0


def parse_cache_option(text: str) -> tuple[str, str]:
    """NAME=VALUE (a --cache field)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _common_options(p: argparse.ArgumentParser, default: Any) -> None:
    """-v/-q/--json, before or after the command (``default`` SUPPRESS on the commands, so that
    one given before the command is kept)."""
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="show sd.cpp's and ggml's log")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress bars or warnings; print only the result")
    p.add_argument("--json", action="store_true", default=default,
                   help="print the result as one JSON document on stdout, and nothing else there "
                        "(info, preflight, probe, generate)")


def _memory_options(p: argparse.ArgumentParser) -> None:
    """The options that change what is allocated (shared by preflight and generate)."""
    p.add_argument("--flash-attention", action="store_true", help="ggml's flash attention: less attention memory")
    p.add_argument("--vae-tiling", action="store_true", help="decode the VAE in spatial tiles (bounded memory)")
    p.add_argument("--tile-size", type=parse_size, metavar="XxY",
                   help="VAE tile in latent pixels, with --vae-tiling (default: sd.cpp's 32x32)")
    p.add_argument("--tile-overlap", type=float, default=0.5, help="VAE tiles' overlap, 0 to 0.5")
    p.add_argument("--offload-to-cpu", action="store_true", help="keep weights in RAM, move them when used")
    p.add_argument("--keep-vae-on-cpu", action="store_true", help="run the VAE on the CPU")
    p.add_argument("--max-vram", metavar="BYTES", help="with --offload-to-cpu on a GPU: run the diffusion model in "
                                                       "graph segments of at most this much memory, e.g. 6GiB")
    p.add_argument("--device", type=int, help="device index, as `wanpy info` lists them (default: the first GPU, "
                                              "else the CPU)")


def _model_files(p: argparse.ArgumentParser) -> None:
    """A model set's files (generate, batch, serve)."""
    p.add_argument("--diffusion-model", required=True, help="the Wan DiT (Wan2.2 A14B: the low-noise expert)")
    p.add_argument("--high-noise-diffusion-model", help="Wan2.2 A14B's high-noise expert")
    p.add_argument("--vae", required=True, help="the Wan VAE (2.2 for TI2V-5B, else 2.1)")
    p.add_argument("--text-encoder", help="umt5-xxl (without: an empty text context)")
    p.add_argument("--clip-vision", help="CLIP ViT-H, for Wan2.1 I2V/FLF2V")
    _tiny_vae(p)


def _tiny_vae(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny-vae", metavar="FILE", help="a TAEHV file (taew2_1 / taew2_2): encodes and decodes instead "
                                                      "of the VAE, far faster and smaller")
    p.add_argument("--tiny-vae-use", choices=("decode", "preview"), default="decode",
                   help="decode: the tiny VAE replaces the VAE; preview: it decodes the previews only (--preview tae)")


def _cache_options(p: argparse.ArgumentParser) -> None:
    """A step cache (preflight: what it keeps; generate: what it saves)."""
    p.add_argument("--cache", metavar="MODE", help="a step cache: easycache, dbcache, taylorseer, cache-dit or "
                                                   "spectrum (README: step caching)")
    p.add_argument("--cache-option", type=parse_cache_option, action="append", default=[], metavar="NAME=VALUE",
                   help="a --cache field (a wanpy.StepCache field or sd-cli's key: threshold, start, end, Fn, Bn, "
                        "w, m, lam, window, flex, warmup, stop; repeatable)")


def _load_settings(p: argparse.ArgumentParser) -> None:
    """What a loaded pipeline is set up with (batch, serve: one pipeline, many requests)."""
    p.add_argument("--flash-attention", action="store_true", help="ggml's flash attention: less attention memory")
    p.add_argument("--vae-tiling", action="store_true", help="decode the VAE in spatial tiles by default")
    p.add_argument("--offload-to-cpu", action="store_true", help="keep weights in RAM, move them when used")
    p.add_argument("--keep-vae-on-cpu", action="store_true", help="run the VAE on the CPU")
    p.add_argument("--max-vram", metavar="BYTES", help="with --offload-to-cpu on a GPU: graph segments of at most this "
                                                       "much memory, e.g. 6GiB")
    p.add_argument("--mmap", action="store_true", help="read the weight files through mmap")


def _add_info(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser("info", parents=[common], formatter_class=_Formatter,
                   help="backend, sd.cpp version, devices and their limits, environment report",
                   description="What this build is and what its devices can really do.",
                   epilog="example:\n  GGML_VK_VISIBLE_DEVICES=0 wanpy info").set_defaults(command="info")


def _add_probe(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("probe", parents=[common], formatter_class=_Formatter,
                       help="frame count, fps, size, duration, codec of a video",
                       description="Decode a video and report what it really holds (and the request wanpy "
                                   "embedded in it).", epilog="example:\n  wanpy probe fox.webm")
    p.add_argument("file", help="a video file")
    p.set_defaults(command="probe")


def _add_preflight(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("preflight", parents=[common], formatter_class=_Formatter,
                       help="what a generation allocates, and what would fit",
                       description="Predict every allocation of a generation from the model's header (or a "
                                   "preset), without loading weights.\nExit status 0 when it fits, 3 when it "
                                   f"does not.\nPresets: {_PRESETS}\n(optionally :dtype, e.g. wan2.x-t2v-14b:q4_k; "
                                   "default f16).",
                       epilog="examples:\n  wanpy preflight wan2.x-t2v-14b --size 832x480 --frames 161 "
                              "--max-allocation 0xfffffffc\n  wanpy preflight wan2.1_t2v_1.3B.gguf --vae "
                              "wan_2.1_vae.safetensors --size 832x480 --frames 81 --flash-attention")
    p.add_argument("model", help="a Wan DiT file or a preset name")
    p.add_argument("--size", type=parse_size, metavar="WxH", required=True, help="width x height")
    p.add_argument("--frames", type=int, required=True, help="a 4k+1 count")
    p.add_argument("--vae", help="the VAE file (default: the family's published VAE)")
    p.add_argument("--text-encoder", help="a umt5-xxl file or the preset umt5-xxl[:dtype]")
    p.add_argument("--high-noise-diffusion-model", help="Wan2.2 A14B's high-noise expert")
    p.add_argument("--clip-vision", help="CLIP ViT-H, for Wan2.1 I2V/FLF2V")
    p.add_argument("--init-image", action="store_true", help="an init image (VACE: a reference image) goes in")
    p.add_argument("--end-image", action="store_true", help="an end image goes in")
    p.add_argument("--preview", choices=("proj", "vae", "tae"), help="the generation's preview mode")
    _cache_options(p)
    p.add_argument("--cfg-scale", type=float, help="with --cache, the generation's cfg: 1 caches one evaluation a "
                                                   "step, else two (default: the family's)")
    p.add_argument("--high-noise-cfg-scale", type=float, help="with --cache, Wan2.2 A14B's high-noise cfg")
    _tiny_vae(p)
    _memory_options(p)
    p.add_argument("--max-allocation", type=parse_bytes, help="per-allocation ceiling, e.g. 4GiB or 0xfffffffc")
    p.add_argument("--total-memory", type=parse_bytes, help="device memory, e.g. 96GiB")
    p.set_defaults(command="preflight")


def _sampling_options(p: argparse.ArgumentParser) -> None:
    from wanpy import _core

    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, help=f"a 4k+1 count, see --align (default: {FAMILY_DEFAULT})")
    g.add_argument("--duration", type=float, help="seconds, at --fps")
    p.add_argument("--align", choices=("down", "up"), help="round a non-4k+1 frame count explicitly")
    p.add_argument("--fps", type=float, help=f"frames per second (default: {FAMILY_DEFAULT})")
    p.add_argument("--steps", type=int, help=f"sampling steps (default: {FAMILY_DEFAULT})")
    p.add_argument("--cfg-scale", type=float, help=f"classifier-free guidance (default: {FAMILY_DEFAULT})")
    p.add_argument("--flow-shift", type=float, help=f"the flow schedule's shift (default: {FAMILY_DEFAULT})")
    methods, schedules = _core.sample_methods(), _core.schedulers()
    p.add_argument("--sample-method", choices=methods, default="euler", metavar="NAME",
                   help=f"the sampler: {', '.join(methods)}")
    p.add_argument("--scheduler", choices=schedules, default="discrete", metavar="NAME",
                   help=f"the noise schedule: {', '.join(schedules)}")
    p.add_argument("--seed", type=int, help="default: drawn at random (the result says which)")
    p.add_argument("--high-noise-steps", type=int, help="Wan2.2 A14B: high-noise steps (default: split --steps at "
                                                        "--moe-boundary, sd.cpp's rule)")
    p.add_argument("--high-noise-cfg-scale", type=float, help=f"Wan2.2 A14B (default: {FAMILY_DEFAULT})")
    p.add_argument("--high-noise-sample-method", choices=methods, metavar="NAME",
                   help="Wan2.2 A14B's high-noise sampler (default: --sample-method)")
    p.add_argument("--high-noise-scheduler", choices=schedules, metavar="NAME",
                   help="Wan2.2 A14B's high-noise schedule (default: --scheduler)")
    p.add_argument("--moe-boundary", type=float, help=f"Wan2.2 A14B's expert switch (default: {FAMILY_DEFAULT})")


def _add_generate(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], formatter_class=_Formatter, help="generate a video file",
                       description="Check every value, load the models, pre-flight, generate, write the file, probe "
                                   "it.",
                       epilog="example:\n  wanpy generate --diffusion-model wan2.1_t2v_1.3B.gguf --vae wan_2.1_vae."
                              "safetensors --text-encoder umt5-xxl-Q8_0.gguf \\\n    --prompt \"a fox in the snow\" "
                              "--size 832x480 --frames 81 --fps 16 -o fox.webm")
    _model_files(p)
    p.add_argument("--prompt", required=True, help="what to generate")
    p.add_argument("--negative-prompt", help="what to avoid")
    p.add_argument("--size", type=parse_size, metavar="WxH", help=f"width x height (default: {FAMILY_DEFAULT})")
    _sampling_options(p)
    p.add_argument("--init-image", help="the first frame (I2V, TI2V, FLF2V)")
    p.add_argument("--end-image", help="the last frame (FLF2V)")
    p.add_argument("--control-video", metavar="FILE",
                   help="VACE: the video that steers the generation, exactly --frames frames of --size")
    p.add_argument("--vace-strength", type=float, help="VACE: how strongly the control video steers (default 1.0)")
    p.add_argument("--reference-image", metavar="FILE", help="VACE: an image whose subject or style the video takes")
    p.add_argument("--lora", type=parse_lora, action="append", default=[], metavar="PATH[:MULTIPLIER]",
                   help="a LoRA (repeatable; multiplier 1.0 by default)")
    p.add_argument("--high-noise-lora", type=parse_lora, action="append", default=[], metavar="PATH[:MULTIPLIER]",
                   help="a LoRA for Wan2.2 A14B's high-noise expert (repeatable)")
    _cache_options(p)
    p.add_argument("--mmap", action="store_true", help="read the weight files through mmap")
    p.add_argument("--vae-conv-direct", action="store_true",
                   help="the VAE's 2-D convolutions as ggml's direct convolution (BENCHMARKS.md: when it helps)")
    _memory_options(p)
    p.add_argument("--threads", type=int, help="CPU threads (default: the physical cores)")
    p.add_argument("--fit", choices=("strict", "auto"), default="strict",
                   help="when the pre-flight says it does not fit: refuse, or choose the cheapest settings that "
                        "fit (flash attention, VAE tiling, VAE on CPU, offload; never a smaller size or fewer "
                        "frames)")
    p.add_argument("--preview", choices=("proj", "vae", "tae"),
                   help="write per-step previews (needs --preview-dir; tae: with --tiny-vae)")
    p.add_argument("--preview-every", type=int, help="preview every N steps (default 1, with --preview)")
    p.add_argument("--preview-dir", type=Path, help="an existing folder for the previews: one PNG per frame")
    p.add_argument("--interpolate", type=float, metavar="FPS",
                   help="write the video at this higher fps, in-between frames by motion-compensated interpolation")
    p.add_argument("--codec", help="the output's codec: vp9 or vp8 (.webm), h264 (.mp4) (default: the first)")
    p.add_argument("--quality", type=int, help="0-100, higher is better (default: 60; none for .gif)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", required=True, help=".webm, .mp4 or .gif")
    p.set_defaults(command="generate")


def _add_batch(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("batch", parents=[common], formatter_class=_Formatter,
                       help="generate many clips on a Ray cluster, one loaded model set per worker",
                       description="Generate every request of a JSON-lines file on a Ray cluster "
                                   "(wanpy.distributed.generate_batch; needs `pip install \"wanpy[ray]\"`).\n"
                                   "Each line is one request: {\"prompt\": ..., and wanpy.RequestOptions}; request N "
                                   "is line N+1. Every line is checked before anything is scheduled.\nOne JSON line "
                                   "per result goes to stdout as it finishes. Exit status 0 when every item is "
                                   "done, 1 when one failed, 130 on Ctrl-C (the running generations stop at their "
                                   "next step; a line per unfinished item).",
                       epilog="examples:\n  wanpy batch prompts.jsonl --diffusion-model wan2.1_t2v_1.3B.gguf --vae "
                              "wan_2.1_vae.safetensors \\\n    --text-encoder umt5-xxl-Q8_0.gguf --output-dir clips "
                              "--ray-address 10.0.0.1:6379\n  wanpy batch prompts.jsonl ... --output-dir clips "
                              "--cpus-per-worker 2   # CPU workers on a local cluster")
    p.add_argument("requests", help="a JSON-lines file of requests ('-': standard input)")
    _model_files(p)
    p.add_argument("--output-dir", required=True, help="an existing folder (shared storage for a cluster) the "
                                                       "WebMs go to, as NNNNN.webm")
    p.add_argument("--ray-address", help="a running Ray cluster (default: RAY_ADDRESS, else a local one started "
                                         "for the batch)")
    p.add_argument("--workers", type=int, help="how many workers (default: as many as the cluster's resources hold)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs each worker holds (default 1 unless "
                                                         "--cpus-per-worker alone is given)")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs each worker holds (alone: CPU workers, each with as "
                                                         "many threads)")
    _load_settings(p)
    p.add_argument("--threads", type=int, help="CPU threads per worker")
    p.set_defaults(command="batch")


def _add_serve(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], formatter_class=_Formatter,
                       help="a local HTTP video service (OpenAI's Videos API and sd.cpp's server schema)",
                       description="Load one model set and serve it over HTTP (needs `pip install "
                                   "\"wanpy[serve]\"`): OpenAI's Videos API at /v1/videos, sd.cpp's server schema "
                                   "at /sdcpp/v1, a page at /. Every request is checked strictly (a field it does "
                                   "not understand is a 422 naming it) and pre-flighted before it is queued. "
                                   "Binding anything but 127.0.0.1 needs an API key (--api-key or WANPY_API_KEY). "
                                   "Logs are JSON lines on stderr.",
                       epilog="example:\n  wanpy serve --diffusion-model wan2.1_t2v_1.3B.gguf --vae wan_2.1_vae.safetensors "
                              "\\\n    --text-encoder umt5-xxl-Q8_0.gguf --port 8000")
    _model_files(p)
    p.add_argument("--host", default="127.0.0.1", help="the interface to bind")
    p.add_argument("--port", type=int, default=8000, help="the TCP port")
    p.add_argument("--api-key", help="clients must send Authorization: Bearer KEY (default: WANPY_API_KEY; "
                                     "needed to bind anything but the loopback interface)")
    p.add_argument("--max-queue", type=int, default=8, help="jobs waiting beyond the running one; more get 429")
    p.add_argument("--results-dir", help="where finished WebMs are kept (default: a new temporary folder)")
    p.add_argument("--result-ttl", type=float, default=3600.0, help="seconds a finished video stays downloadable")
    p.add_argument("--results-quota", type=parse_bytes, default=2 * 2**30,
                   help="most bytes of results kept; the oldest expire first (default: 2GiB)")
    _load_settings(p)
    p.add_argument("--threads", type=int, help="CPU threads (default: the physical cores)")
    p.add_argument("--device", type=int, help="device index, as `wanpy info` lists them")
    p.set_defaults(command="serve")


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], formatter_class=_Formatter,
                       help="the whole path on random weights, no download",
                       description="Make (or reuse) a random-weight Wan2.1-T2V-1.3B, generate a short clip on "
                                   "this machine, write WebM and probe it.",
                       epilog="example:\n  wanpy demo -o demo.webm")
    p.add_argument("-o", "--output", default=str(Path(tempfile.gettempdir()) / "wanpy-demo.webm"),
                   help=".webm, .mp4 or .gif")
    p.add_argument("--size", type=parse_size, metavar="WxH", default=(128, 96), help="width x height")
    p.add_argument("--frames", type=int, default=9, help="a 4k+1 count")
    p.add_argument("--steps", type=int, default=4, help="sampling steps")
    p.add_argument("--seed", type=int, default=42, help="the seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(command="demo")


def build_parser() -> argparse.ArgumentParser:
    from wanpy._version import __version__

    parser = argparse.ArgumentParser(
        prog="wanpy", formatter_class=_Formatter,
        description="Wan2.1/Wan2.2 video generation on stable-diffusion.cpp, in-process.",
        epilog="examples:\n  wanpy info\n  wanpy demo -o demo.webm\n"
               "  wanpy preflight wan2.x-t2v-14b --size 832x480 --frames 161 --max-allocation 4GiB\n"
               "  wanpy probe demo.webm\n  wanpy batch prompts.jsonl --diffusion-model ... --vae ... --output-dir clips")
    parser.add_argument("--version", action="version", version=f"wanpy {__version__}")
    _common_options(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_info, _add_probe, _add_preflight, _add_generate, _add_batch, _add_serve, _add_demo):
        add(sub, common)
    return parser
