"""What the pre-flight measures: model files and presets, as one ``_core.MeasureSession``.

The session is sd.cpp's own model loader over the files' headers (and the presets' tensor
tables): its runners build the real graphs over weightless parameters. Sessions are kept
for the last few sets of sources (a file's version is its path, size and mtime).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wanpy import _core
from wanpy.catalogue import COMPONENTS, DITS, TINY_VAES
from wanpy.errors import ModelFileError
from wanpy.headers import file_version
from wanpy.identify import identify_file
from wanpy.memory.presets import DEFAULT_PRESET_DTYPE, PRESETS, PresetPart, parse_preset, preset_tensors
from wanpy.validation import check_file

__all__ = ["SourceFile", "Sources", "session", "sources"]

PathArg = str | os.PathLike[str]

_MAX_SESSIONS = 8


@dataclass(frozen=True)
class SourceFile:
    """A model file and the prefix sd.cpp loads its tensors with."""

    path: str
    prefix: str


@dataclass(frozen=True)
class Sources:
    """Everything one measurement reads: files, preset parts, and the model's label."""

    files: tuple[SourceFile, ...]
    presets: tuple[PresetPart, ...]
    label: str


def sources(model: PathArg, *, vae: PathArg | None, text_encoder: PathArg | None, high_noise: PathArg | None,
            clip_vision: PathArg | None, tiny_vae: PathArg | None = None) -> Sources:
    """The files and presets for ``preflight``'s model arguments, each file checked to be the
    component it is given as (FileNotFoundError, ModelFileError) and the presets parsed
    (ValueError for an unknown name or dtype)."""
    files: list[SourceFile] = []
    presets: list[PresetPart] = []
    parsed = parse_preset(model) if isinstance(model, str) and not Path(model).exists() else None
    if parsed is not None:
        preset = PRESETS[parsed.base]
        presets.append(_dit_part(preset.dit.key, parsed.dtype, "diffusion_model"))
        if preset.two_experts and high_noise is None:
            presets.append(_dit_part(preset.dit.key, parsed.dtype, "high_noise_diffusion_model"))
        label = str(parsed)
        vae_version = preset.vae.version
        needs_clip_vision = preset.needs_clip_vision
    else:
        if isinstance(model, str) and not Path(model).exists() and not re.search(r"[/\\.]", model):
            raise ValueError(f"{model!r} is neither a file nor a preset; presets: {', '.join(PRESETS)} "
                             "(optionally with :dtype, e.g. wan2.x-t2v-14b:q4_k)")
        path = _checked_file(model, "diffusion_model", "dit")
        files.append(_file(path, "diffusion_model"))
        label = Path(path).name
        name = identify_file(path).name
        assert name is not None  # _checked_file refuses what sd.cpp does not recognise
        vae_version = DITS[name].vae.version  # the family's published VAE
        needs_clip_vision = False
    if high_noise is not None:
        files.append(_file(_checked_file(high_noise, "high_noise_diffusion_model", "dit"),
                           "high_noise_diffusion_model"))
    if vae is not None:
        files.append(_file(_checked_file(vae, "vae", "vae"), "vae"))
    else:
        presets.append(PresetPart("vae", vae_version, DEFAULT_PRESET_DTYPE, COMPONENTS["vae"].graph_prefix))
    if text_encoder is not None:
        te = parse_preset(text_encoder, "text_encoder", text_encoder=True) if isinstance(
            text_encoder, str) and not Path(text_encoder).exists() else None
        if te is not None:
            presets.append(PresetPart("text_encoder", "", te.dtype, COMPONENTS["text_encoder"].graph_prefix))
        else:
            files.append(_file(_checked_file(text_encoder, "text_encoder", "text_encoder"), "text_encoder"))
    if clip_vision is not None:
        files.append(_file(_checked_file(clip_vision, "clip_vision", "clip_vision"), "clip_vision"))
    elif needs_clip_vision:
        presets.append(PresetPart("clip_vision", "", DEFAULT_PRESET_DTYPE, COMPONENTS["clip_vision"].graph_prefix))
    if tiny_vae is not None:
        path = _checked_file(tiny_vae, "tiny_vae", "tiny_vae")
        tiny = identify_file(path)
        if TINY_VAES[tiny.name or ""].vae != f"wan{vae_version}-vae":
            raise ModelFileError(f"tiny_vae: {path} is {tiny.name}, for the {TINY_VAES[tiny.name or ''].vae}; this "
                                 f"model's latents are the wan{vae_version}-vae's", path=path)
        files.append(_file(path, "tiny_vae"))
    return Sources(tuple(files), tuple(presets), label)


def _dit_part(key: str, dtype: str, argument: str) -> PresetPart:
    return PresetPart("dit", key, dtype, COMPONENTS[argument].graph_prefix)


def _file(path: str, argument: str) -> SourceFile:
    return SourceFile(path, COMPONENTS[argument].load_prefix)


def _checked_file(path: PathArg, component: str, expected: str) -> str:
    """``path`` as a str, once it is known to be a ``expected`` file sd.cpp can use."""
    check_file(component, path)  # a readable regular file with a UTF-8 path, or a clear error
    p = os.fspath(path)
    kind = identify_file(p)
    if kind.kind != expected:
        raise ModelFileError(f"{component}: {p} is not a {expected.replace('_', ' ')} file ({kind})", path=p)
    if not kind.supported:
        raise ModelFileError(f"{component}: sd.cpp cannot use {p}: {'; '.join(kind.problems) or kind}", path=p)
    return p


_SESSIONS: dict[Any, Any] = {}
_SESSIONS_LOCK = threading.Lock()  # pre-flights run on several threads (a service's submissions, its generation)


def session(src: Sources) -> Any:
    """The measuring session for these sources (one per version of the files)."""
    key = (tuple((file_version(f.path), f.prefix) for f in src.files), src.presets)
    with _SESSIONS_LOCK:
        return _session(key, src)


def _session(key: Any, src: Sources) -> Any:
    s = _SESSIONS.get(key)
    if s is None:
        tensors: list[tuple[str, int, list[int]]] = []
        for part in src.presets:
            tensors.extend(preset_tensors(part))
        try:
            s = _core.MeasureSession([(f.path, f.prefix) for f in src.files], tensors)
        except _core.NativeError as e:
            raise ModelFileError(f"pre-flight: {e}") from None
        if len(_SESSIONS) >= _MAX_SESSIONS:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = s
    return s
