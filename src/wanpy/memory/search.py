"""The search behind ``fit="auto"``: the cheapest memory settings under which a request fits.

Settings are tried in order of cost, cheapest first, and never turned off; the size and the
frame count are never changed. ``largest_fitting`` bisects a monotone question (the most
frames, the largest size, the largest VAE tile).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from wanpy.memory.measure import Config, evaluate, smallest_budget
from wanpy.memory.target import Target

__all__ = ["FIT_SETTINGS", "Search", "candidates", "changes", "choose", "largest_fitting"]

FIT_SETTINGS = ("flash_attention", "vae_tiling", "tile_size", "keep_vae_on_cpu", "offload_to_cpu", "max_vram")
_MIB = 2**20  # budgets are whole MiB: sd.cpp holds max_vram as a float of GiB, exact for those

# The largest VAE tile (latent pixels) the search tries below sd.cpp's default of 32.
_LARGEST_SMALLER_TILE = 31
_SMALLEST_TILE = 4  # sd.cpp's own minimum


@dataclass(frozen=True)
class Search:
    """The first setting set that fits (None: none does) and how many sets were measured."""

    chosen: Config | None
    tried: int


def largest_fitting(ok: Callable[[int], bool], upper: int, start: int = 0) -> int | None:
    """The largest n in [start, upper] with ok(n), assuming ok is monotone (None if none)."""
    if upper < start or not ok(start):
        return None
    lo, hi = start, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def candidates(cfg: Config, t: Target, fits: Callable[[Config], bool],
               budget_floor: Callable[[Config], int] | None = None) -> Iterator[Config]:
    """Setting sets in order of cost, cheapest first; never turns a setting off.

    Flash attention computes the same attention and is the cheapest; VAE tiling at sd.cpp's
    default tile next; then smaller tiles (more of them, slower); then the VAE on the CPU;
    then offloading the weights (slowest); last, on a GPU of known memory, a ``max_vram`` budget
    with the weights offloaded: the largest (fewest segments, fastest) whose peak fits.
    ``fits(cfg)`` decides tile and budget bisections; ``budget_floor(cfg)``, the smallest budget sd.cpp
    can plan (without it no budget is tried)."""
    cheap = [n for n in ("flash_attention", "vae_tiling") if not getattr(cfg, n)]
    costly = [] if t.is_cpu else [n for n in ("keep_vae_on_cpu", "offload_to_cpu") if not getattr(cfg, n)]
    offloaded: list[Config] = []  # the sets with the weights offloaded, cheapest first: a budget's bases
    for tier in range(1 << len(costly)):
        base = _turned_on(cfg, [n for i, n in enumerate(costly) if tier >> i & 1])
        subsets = [_turned_on(base, [n for i, n in enumerate(cheap) if mask >> i & 1])
                   for mask in range(1 << len(cheap))]
        offloaded += [c for c in subsets if c.offload_to_cpu]
        yield from subsets
        if cfg.tile_size is not None:
            continue  # the caller chose the tile size: kept
        for c in subsets:
            if c.vae_tiling:
                n = largest_fitting(functools.partial(_tile_fits, fits, c), _LARGEST_SMALLER_TILE,
                                    start=_SMALLEST_TILE)
                if n is not None:
                    yield dataclasses.replace(c, tile_size=(n, n))
    if budget_floor is None or t.is_cpu or t.total_memory is None or cfg.max_vram is not None:
        return
    for c in offloaded:
        yield from _budgets(c, t, fits, budget_floor(c))


def _budgets(cfg: Config, t: Target, fits: Callable[[Config], bool], floor: int) -> Iterator[Config]:
    """``cfg`` with the largest whole-MiB max_vram up to the device's memory that fits, when one does
    (a larger budget merges more segments: fewer weight transfers, more memory)."""
    assert t.total_memory is not None
    lowest = -(-floor // _MIB)
    n = largest_fitting(lambda mib: fits(dataclasses.replace(cfg, max_vram=mib * _MIB)), t.total_memory // _MIB,
                        start=lowest)
    if n is not None:
        yield dataclasses.replace(cfg, max_vram=n * _MIB)


def _turned_on(cfg: Config, names: list[str]) -> Config:
    on: dict[str, Any] = dict.fromkeys(names, True)
    return dataclasses.replace(cfg, **on)


def _tile_fits(fits: Callable[[Config], bool], cfg: Config, n: int) -> bool:
    return fits(dataclasses.replace(cfg, tile_size=(n, n)))


def choose(s: Any, cfg: Config, t: Target) -> Search:
    """The first setting set of ``candidates`` that fits, and how many were measured."""
    measured: dict[Config, bool] = {}  # a tile bisection's answer is not measured again

    def fits(c: Config) -> bool:
        if c not in measured:
            measured[c] = evaluate(s, c, t).fits
        return measured[c]

    chosen = next((c for c in candidates(cfg, t, fits, lambda c: smallest_budget(s, c, t)) if fits(c)), None)
    return Search(chosen, len(measured))


def changes(a: Config, b: Config) -> str:
    """``b``'s settings that differ from ``a``'s, as ``name=value, ...``."""
    return ", ".join(f"{f.name}={getattr(b, f.name)}" for f in dataclasses.fields(a)
                     if getattr(a, f.name) != getattr(b, f.name))
