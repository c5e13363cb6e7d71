"""Pre-flight presets: the published Wan models measured with no file, by name.

A preset is a family of ``wanpy.catalogue`` (or one of its ``PRESET_ALIASES``), optionally
with a weight dtype (``wan2.x-t2v-14b:q4_k``; default f16). Its tensors are those the real
files have (``wanpy.layouts``), handed to the measuring session in sd.cpp's own layout.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from wanpy.catalogue import FAMILIES, PRESET_ALIASES, WanFamily, dit_by_key, family
from wanpy.headers import GGML_TYPES, TensorInfo
from wanpy.identify import sdcpp_ne
from wanpy.layouts import GGML_NAMES, TensorSpec, clip_vision_h_layout, dit_layout, umt5_xxl_layout, vae_layout

__all__ = ["DEFAULT_PRESET_DTYPE", "PRESETS", "TEXT_ENCODER_PRESET", "PresetName", "PresetPart", "parse_preset",
           "preset_tensors"]

# Every preset name -> its family (an alias names the same family as its target).
PRESETS: dict[str, WanFamily] = {name: family(name) for name in (*FAMILIES, *PRESET_ALIASES)}
TEXT_ENCODER_PRESET = "umt5-xxl"
DEFAULT_PRESET_DTYPE = "f16"

_GGML_TYPE_IDS = {t.name.lower(): type_id for type_id, t in GGML_TYPES.items()}

PartKind = Literal["dit", "vae", "text_encoder", "clip_vision"]


@dataclass(frozen=True)
class PresetName:
    """A parsed preset name: ``base`` (a key of PRESETS, or TEXT_ENCODER_PRESET) and its dtype."""

    base: str
    dtype: str

    def __str__(self) -> str:
        return f"{self.base}:{self.dtype}"


@dataclass(frozen=True)
class PresetPart:
    """One model of a preset, as the measuring session gets it: ``key`` is the DiT's catalogue
    key, the VAE's version ("2.1", "2.2"), or "" (the text encoder, CLIP vision); ``prefix``
    the tensor-name prefix of sd.cpp's graphs."""

    kind: PartKind
    key: str
    dtype: str
    prefix: str


def parse_preset(name: str, what: str = "model", *, text_encoder: bool = False) -> PresetName | None:
    """``name`` as a preset (a model preset, or with ``text_encoder`` the umt5-xxl one); None
    when it names none. An unknown dtype raises ValueError."""
    base, _, dtype = name.strip().lower().partition(":")
    known = base == TEXT_ENCODER_PRESET if text_encoder else base in PRESETS
    if not known:
        return None
    dtype = dtype or DEFAULT_PRESET_DTYPE
    if dtype not in GGML_NAMES:
        raise ValueError(f"unknown dtype {dtype!r} in {what} preset {name!r}; known: {', '.join(GGML_NAMES)}")
    return PresetName(base, dtype)


def preset_tensors(part: PresetPart) -> tuple[tuple[str, int, list[int]], ...]:
    """The part's tensors as ``_core.MeasureSession`` takes them: (name, ggml type id, sd.cpp ne)."""
    return _tensors(part.kind, part.key, part.dtype, part.prefix)


@functools.lru_cache(maxsize=32)
def _tensors(kind: PartKind, key: str, dtype: str, prefix: str) -> tuple[tuple[str, int, list[int]], ...]:
    specs: list[TensorSpec]
    if kind == "dit":
        specs = dit_layout(dit_by_key(key), dtype)
    elif kind == "vae":
        specs = vae_layout(key)
    elif kind == "text_encoder":
        specs = umt5_xxl_layout(dtype)
    else:
        specs = clip_vision_h_layout()
    out = []
    for s in specs:
        ne = list(sdcpp_ne(TensorInfo(s.name, s.shape, s.ggml_type, 0, 0), "gguf"))
        out.append((prefix + s.name, _GGML_TYPE_IDS[s.ggml_type.lower()], ne))
    return tuple(out)
