"""What would fit instead: the pre-flight's suggestions, each re-measured before it is made.

For a request that does not fit: each memory setting alone (and flash attention with VAE
tiling), what ``fit="auto"`` would choose, the most frames at this size and the largest size
(same aspect) at these frames. A request refused for host memory gets only the last two: no
device setting shrinks the decoded video.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from wanpy.memory.measure import Config, evaluate, measure
from wanpy.memory.search import changes, choose, largest_fitting
from wanpy.memory.target import Target
from wanpy.units import format_bytes

__all__ = ["suggest"]

_DEFAULT_TILE = 32  # sd.cpp's VAE tile, latent pixels
_SMALLEST_TILE = 4


@dataclass(frozen=True)
class _Option:
    """One alternative setting set and how the suggestion names it."""

    label: str
    config: Config


def suggest(s: Any, cfg: Config, t: Target, multiple: int, host_bound: bool = False) -> tuple[str, ...]:
    """What would fit instead of ``cfg`` on ``t`` (sizes step by ``multiple``). ``host_bound``:
    the decoded video exceeds host memory: only fewer frames or a smaller size are suggested."""
    out: list[str] = []
    for option in [] if host_bound else _options(cfg, t):
        e = evaluate(s, option.config, t)
        out.append(f"{option.label}: largest becomes {format_bytes(e.largest.nbytes)}"
                   + (" and it fits" if e.fits else ", still does not fit"))
    best = None if host_bound else choose(s, cfg, t).chosen
    if best is not None:
        out.insert(0, f"fit='auto' would choose {changes(cfg, best)}: the cheapest settings that fit")
    # frames and sizes with the cheapest option set that fits (or all cheap ones on)
    search = best or _smallest_vae_tile(s, dataclasses.replace(cfg, flash_attention=True, vae_tiling=True), t)
    with_opts = "" if search == cfg else " (" + changes(cfg, search) + ")"
    out.append(_frames(s, cfg, search, t) + with_opts)
    size = _size(s, cfg, search, t, multiple)
    if size is not None:
        out.append(size + with_opts)
    if t.max_allocation is not None:
        out.append("a HIP, CUDA or CPU build has no per-allocation ceiling")
    return tuple(out)


def _options(cfg: Config, t: Target) -> list[_Option]:
    """Each setting the request has off, alone (flash attention and VAE tiling also together)."""
    options = []
    if not cfg.flash_attention:
        options.append(_Option("flash_attention=True", dataclasses.replace(cfg, flash_attention=True)))
    if not cfg.vae_tiling:
        options.append(_Option("vae_tiling=True", dataclasses.replace(cfg, vae_tiling=True)))
    if not cfg.flash_attention and not cfg.vae_tiling:
        options.append(_Option("flash_attention=True and vae_tiling=True",
                               dataclasses.replace(cfg, flash_attention=True, vae_tiling=True)))
    if not t.is_cpu and not cfg.keep_vae_on_cpu:
        options.append(_Option("keep_vae_on_cpu=True", dataclasses.replace(cfg, keep_vae_on_cpu=True)))
    if not t.is_cpu and not cfg.offload_to_cpu:
        options.append(_Option("offload_to_cpu=True", dataclasses.replace(cfg, offload_to_cpu=True)))
    return options


def _frames(s: Any, cfg: Config, search: Config, t: Target) -> str:
    """The most frames (4k+1) that fit at the request's size."""
    k = largest_fitting(lambda k: evaluate(s, dataclasses.replace(search, num_frames=4 * k + 1), t).fits,
                        (cfg.num_frames - 1) // 4)
    if k is None:
        return f"at {cfg.width}x{cfg.height} not even 1 frame fits"
    return f"at {cfg.width}x{cfg.height} at most {4 * k + 1} frames fit"


def _size(s: Any, cfg: Config, search: Config, t: Target, multiple: int) -> str | None:
    """The largest size of the request's aspect ratio that fits at its frame count."""
    aspect = cfg.height / cfg.width

    def width(n: int) -> int:
        return n * multiple

    def height(n: int) -> int:
        return max(multiple, round(width(n) * aspect / multiple) * multiple)

    n = largest_fitting(lambda n: evaluate(s, dataclasses.replace(search, width=width(n), height=height(n)), t).fits,
                        cfg.width // multiple, start=1)
    if n is None:
        return None
    return f"at {cfg.num_frames} frames at most {width(n)}x{height(n)} fits (same aspect)"


def _smallest_vae_tile(s: Any, cfg: Config, t: Target) -> Config:
    """With tiling and no tile size asked: the largest tile whose VAE allocations fit."""
    if t.max_allocation is None or cfg.tile_size is not None:
        return cfg
    limit = t.max_allocation

    def vae_fits(n: int) -> bool:
        allocs = measure(s, dataclasses.replace(cfg, tile_size=(n, n)), t).allocations
        return all(a.nbytes <= limit for a in allocs if a.component in ("vae", "tiny_vae"))

    n = largest_fitting(vae_fits, _DEFAULT_TILE, start=_SMALLEST_TILE)
    return cfg if n in (None, _DEFAULT_TILE) else dataclasses.replace(cfg, tile_size=(n, n))
