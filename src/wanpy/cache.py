"""``StepCache``: sd.cpp's step caching (``sd_cache_params_t``), for the modes that act on Wan.

A step cache replaces whole diffusion-model evaluations of a sampling run by a stored or
extrapolated output. What the pinned engine (sd.cpp 90e87bc8) does for Wan video, read from its
source (``src/sample-cache.cpp``, ``easycache.hpp``, ``cache_dit.hpp``, ``spectrum.hpp``):

- ``easycache``: a step is served from the store while the accumulated relative change of the
  model's input stays below ``reuse_threshold``, inside a window of the denoiser's noise levels
  (``start_percent``/``end_percent`` of its 1000 timesteps, mapped through the flow shift: not a
  fraction of the steps). The earliest possible skip is the third step inside the window.
- ``dbcache``, ``taylorseer``, ``cache-dit``: the same decisions in this engine: a step is
  served while the relative L1 change of the input since the last computed step is below
  ``residual_diff_threshold``, scaled by ``fn_compute_blocks`` (x(1 + 0.02(Fn - 8))) and
  ``bn_compute_blocks`` (x(1 - 0.03 Bn)); the window is fixed at 15%-95% of the steps. No
  block is computed or skipped on its own (Wan's DiT always runs whole).
- ``spectrum``: after ``spectrum_warmup_steps`` computed steps it predicts the denoised latent of
  ``window - 1`` steps out of ``window`` (the window growing by ``spectrum_flex_window`` after
  each computed step) from a Chebyshev fit (degree ``spectrum_m``, ridge ``spectrum_lam``)
  blended with a Taylor step (weight ``1 - spectrum_w``), until ``spectrum_stop_percent`` of the
  steps.

``ucache`` is refused: sd.cpp applies it to UNet models only and runs Wan uncached. The engine's
other fields (``scm_mask``, ``scm_policy_dynamic``, ``max_warmup_steps``, ``max_cached_steps``,
``max_continuous_cached_steps``, ``taylorseer_*``, ``error_decay_rate``, ...) change nothing on
Wan's path, so they are not options. Wan2.2 A14B: one setting for both experts; each expert's
pass starts a fresh cache. What a cache keeps (input/output copies of the latent) lives in host
memory (``std::vector``), never on the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from wanpy import _core
from wanpy.validation import check_float, check_int

__all__ = ["CACHE_MODES", "CacheMode", "StepCache", "check_cache", "parse_cache_options"]

CacheMode = Literal["easycache", "dbcache", "taylorseer", "cache-dit", "spectrum"]
CACHE_MODES: tuple[str, ...] = ("easycache", "dbcache", "taylorseer", "cache-dit", "spectrum")
_CACHE_DIT = ("dbcache", "taylorseer", "cache-dit")

# field -> (modes that read it, the engine's default (sd_cache_params_init, easycache's INFINITY
# resolved as sd.cpp resolves it), sd.cpp's field name)
_FIELDS: dict[str, tuple[tuple[str, ...], float | int, str]] = {
    "reuse_threshold": (("easycache",), 0.2, "reuse_threshold"),
    "start_percent": (("easycache",), 0.15, "start_percent"),
    "end_percent": (("easycache",), 0.95, "end_percent"),
    "residual_diff_threshold": (_CACHE_DIT, 0.08, "residual_diff_threshold"),
    "fn_compute_blocks": (_CACHE_DIT, 8, "Fn_compute_blocks"),
    "bn_compute_blocks": (_CACHE_DIT, 0, "Bn_compute_blocks"),
    "spectrum_w": (("spectrum",), 0.40, "spectrum_w"),
    "spectrum_m": (("spectrum",), 3, "spectrum_m"),
    "spectrum_lam": (("spectrum",), 1.0, "spectrum_lam"),
    "spectrum_window_size": (("spectrum",), 2, "spectrum_window_size"),
    "spectrum_flex_window": (("spectrum",), 0.50, "spectrum_flex_window"),
    "spectrum_warmup_steps": (("spectrum",), 4, "spectrum_warmup_steps"),
    "spectrum_stop_percent": (("spectrum",), 0.9, "spectrum_stop_percent"),
}

# what sd.cpp has and Wan's path never reads (a value given for one is refused with the reason)
_INERT = {
    "scm_mask": "sd.cpp parses it, but its Wan (DiT) cache path never consults it",
    "scm_policy_dynamic": "only sd.cpp's unused block-level cache reads it",
    "max_warmup_steps": "sd.cpp's Wan cache path counts it down without acting on it",
    "max_cached_steps": "sd.cpp's Wan cache path counts it without acting on it",
    "max_continuous_cached_steps": "sd.cpp's Wan cache path counts it without acting on it",
    "taylorseer_n_derivatives": "sd.cpp keeps the derivatives but never uses their prediction",
    "taylorseer_skip_interval": "sd.cpp stores it and never reads it",
    "error_decay_rate": "only ucache reads it (UNet models)",
    "use_relative_threshold": "only ucache reads it (UNet models)",
    "reset_error_on_compute": "only ucache reads it (UNet models)",
}

# sd-cli's --cache-option keys (examples/common/common.cpp), for users who bring theirs
_SDCLI_KEYS = {"start": "start_percent", "end": "end_percent", "Fn": "fn_compute_blocks",
               "fn": "fn_compute_blocks", "Bn": "bn_compute_blocks", "bn": "bn_compute_blocks",
               "w": "spectrum_w", "m": "spectrum_m", "lam": "spectrum_lam", "window": "spectrum_window_size",
               "flex": "spectrum_flex_window", "stop": "spectrum_stop_percent", "decay": "error_decay_rate",
               "relative": "use_relative_threshold", "reset": "reset_error_on_compute"}


@dataclass(frozen=True)
class StepCache:
    """A step cache for a generation: ``cache=wanpy.StepCache("easycache", reuse_threshold=0.1)``
    (``cache="easycache"``: the mode with the engine's defaults).

    The fields the mode reads hold the engine's defaults unless given; the others stay None, and
    giving one is a ``ValueError`` naming the fields the mode reads (see the module's doc for
    what each does). ``reuse_threshold=0`` (easycache) or ``residual_diff_threshold=0`` never
    skips a step."""

    mode: CacheMode
    reuse_threshold: float | None = None
    start_percent: float | None = None
    end_percent: float | None = None
    residual_diff_threshold: float | None = None
    fn_compute_blocks: int | None = None
    bn_compute_blocks: int | None = None
    spectrum_w: float | None = None
    spectrum_m: int | None = None
    spectrum_lam: float | None = None
    spectrum_window_size: int | None = None
    spectrum_flex_window: float | None = None
    spectrum_warmup_steps: int | None = None
    spectrum_stop_percent: float | None = None

    def __post_init__(self) -> None:
        mode = _check_mode(self.mode)
        for name, (modes, default, _) in _FIELDS.items():
            value = getattr(self, name)
            if mode not in modes:
                if value is not None:
                    raise ValueError(f"StepCache: {name} is read by mode {' / '.join(map(repr, modes))} only; "
                                     f"mode {mode!r} reads {', '.join(fields_of(mode))}")
                continue
            object.__setattr__(self, name, _check_field(name, default if value is None else value))
        if mode == "easycache" and not self.start_percent < self.end_percent:  # type: ignore[operator]
            raise ValueError(f"StepCache: start_percent ({self.start_percent}) must be below end_percent "
                             f"({self.end_percent}); sd.cpp would switch the cache off")

    def to_dict(self) -> dict[str, Any]:
        """The mode and the fields it reads (JSON-serialisable)."""
        return {"mode": self.mode, **{name: getattr(self, name) for name in fields_of(self.mode)}}

    def to_native(self) -> _core.CacheParams:
        """sd.cpp's ``sd_cache_params_t``: its defaults, then this mode and its fields."""
        params = _core.CacheParams()
        params.mode = self.mode
        for name in fields_of(self.mode):
            setattr(params, _FIELDS[name][2], getattr(self, name))
        return params

    def host_copies(self, conditions: int) -> int:
        """How many f32 arrays the size of the latent this cache holds at its peak, in host memory
        (``std::vector``), during one sampling pass with ``conditions`` evaluations a step (2 with
        cfg != 1: cond and uncond, each cached on its own; 1 with cfg 1). Read from sd.cpp
        90e87bc8: easycache keeps a change per condition and the first condition's last input and
        output (``easycache.hpp``); dbcache keeps input, output and change per condition
        (``cache_dit.hpp``); taylorseer and cache-dit add the first condition's two sets of
        derivatives (order 2, the engine's ``taylorseer_n_derivatives`` 1); spectrum keeps the
        last max(m + 1, 6) denoised latents, one more while it trims (``spectrum.hpp``). None of it
        grows with the steps, and the experts of Wan2.2 A14B each start a fresh one."""
        if conditions not in (1, 2):
            raise ValueError(f"conditions must be 1 or 2, got {conditions!r}")
        if self.mode == "easycache":
            return conditions + 2
        if self.mode == "dbcache":
            return 3 * conditions
        if self.mode in ("taylorseer", "cache-dit"):
            return 3 * conditions + 2 * 2
        return max(int(self.spectrum_m) + 1, 6) + 1  # type: ignore[arg-type]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"StepCache({args})"


def fields_of(mode: str) -> tuple[str, ...]:
    """The StepCache fields ``mode`` reads."""
    return tuple(name for name, (modes, _, _) in _FIELDS.items() if mode in modes)


def _check_mode(mode: Any) -> str:
    if mode == "ucache":
        raise ValueError("cache mode 'ucache': sd.cpp applies it to UNet models only (SD1/SD2/SDXL) and runs a "
                         f"Wan model uncached; modes that act on Wan: {', '.join(CACHE_MODES)}")
    if mode in ("disabled", "none"):
        raise ValueError(f"cache mode {mode!r}: for no step cache pass cache=None; modes: {', '.join(CACHE_MODES)}")
    if not isinstance(mode, str) or mode not in CACHE_MODES:
        raise ValueError(f"cache mode {mode!r} is not one of: {', '.join(CACHE_MODES)}")
    return mode


def _check_field(name: str, value: Any) -> float | int:
    label = f"StepCache.{name}"
    if name in ("reuse_threshold", "residual_diff_threshold"):
        return check_float(label, value, minimum=0)  # 0: never skips (sd.cpp's test is strictly below)
    if name == "start_percent":
        return check_float(label, value, minimum=0, maximum=1, exclusive_maximum=True)
    if name == "end_percent":
        return check_float(label, value, minimum=0, exclusive_minimum=True, maximum=1)
    if name == "fn_compute_blocks":  # sd.cpp clamps the threshold's factor to [0.5, 2]: 58 reaches 2
        return check_int(label, value, minimum=0, maximum=58)
    if name == "bn_compute_blocks":  # ... and to [0.5, 1]: 16 is the last below 0.5
        return check_int(label, value, minimum=0, maximum=16)
    if name == "spectrum_w":
        return check_float(label, value, minimum=0, maximum=1)
    if name == "spectrum_m":  # negative: out-of-bounds writes in sd.cpp's predictor
        return check_int(label, value, minimum=0, maximum=1000)
    if name in ("spectrum_lam", "spectrum_flex_window"):
        return check_float(label, value, minimum=0)
    if name == "spectrum_window_size":  # sd.cpp treats anything below 1 as 1
        return check_int(label, value, minimum=1, maximum=1000)
    if name == "spectrum_warmup_steps":
        return check_int(label, value, minimum=0, maximum=1000)
    if name == "spectrum_stop_percent":  # 0 would mean "never stop" to sd.cpp
        return check_float(label, value, minimum=0, exclusive_minimum=True, maximum=1)
    raise AssertionError(name)


def check_cache(cache: Any) -> StepCache | None:
    """The ``cache=`` option: None, a mode name (its defaults) or a ``StepCache``."""
    if cache is None or isinstance(cache, StepCache):
        return cache
    if isinstance(cache, str):
        return StepCache(cache)  # type: ignore[arg-type]
    raise TypeError(f"cache must be None, a mode name ({', '.join(CACHE_MODES)}) or a wanpy.StepCache, "
                    f"got {type(cache).__name__}")


def parse_cache_options(mode: str, options: Mapping[str, str] | Iterable[tuple[str, str]]) -> StepCache:
    """A StepCache from text values (the CLI's ``--cache-option NAME=VALUE``, in order). NAME
    is a StepCache field or one of sd-cli's ``--cache-option`` keys (``threshold``, ``start``,
    ``w``, ...); a field given twice is refused (sd-cli keeps the last)."""
    mode = _check_mode(mode)
    values: dict[str, float | int] = {}
    for key, text in options.items() if isinstance(options, Mapping) else options:
        name = _field_for_key(mode, key)
        if name in values:
            raise ValueError(f"cache option {key} given more than once ({name})")
        kind = int if isinstance(_FIELDS[name][1], int) else float
        try:
            values[name] = kind(text)
        except ValueError:
            raise ValueError(f"cache option {key}={text!r}: {name} takes {'an integer' if kind is int else 'a number'}"
                             ) from None
    return StepCache(mode, **values)  # type: ignore[arg-type]


def _field_for_key(mode: str, key: str) -> str:
    if key == "threshold":
        name = "reuse_threshold" if mode == "easycache" else "residual_diff_threshold"
    elif key == "warmup":
        name = "spectrum_warmup_steps" if mode == "spectrum" else "max_warmup_steps"
    else:
        name = _SDCLI_KEYS.get(key, key)
    if name in _INERT:
        raise ValueError(f"cache option {key!r} ({name}): {_INERT[name]}; mode {mode!r} reads "
                         f"{', '.join(fields_of(mode))}")
    if name not in _FIELDS:
        raise ValueError(f"unknown cache option {key!r}; mode {mode!r} reads {', '.join(fields_of(mode))}")
    return name

