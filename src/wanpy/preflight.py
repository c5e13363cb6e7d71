"""Pre-flight: what a generation will allocate, before a single weight is loaded.

``preflight()`` answers "does it fit, and if not, what would?" in milliseconds. The
figures are not estimated: sd.cpp's own runners (the classes ``new_sd_ctx`` builds)
construct the real graphs for the requested shape over weightless parameters, and
ggml's graph allocator sizes them in measure-only mode (``ggml_gallocr_reserve_n_size``)
with the target device's alignment and buffer size; weights are sized by ggml's own
weight allocator. Headers are read by sd.cpp's ModelLoader, so the weight types are
those sd.cpp will use (e.g. a BF16 umt5 token table becomes one F32 tensor).

What the figures mean (``wanpy.Preflight``):

- every component's weights (the largest weight buffer and the largest weight tensor),
- each runner's compute buffer (ggml splits it into chunks of at most the device's
  buffer size) and the largest single tensor in it, per phase: text encoding, CLIP
  vision, VAE encode (when an image goes in), high-noise sampling (Wan2.2 A14B),
  sampling, VAE decode,
- per-phase totals of device memory: the weights resident on the device plus the
  phase's compute buffer (and, with ``offload_to_cpu``, the running component's
  weights), against the device memory.

A generation fits when no single allocation exceeds the device's per-allocation
ceiling (``Device.max_allocation``; none on CPU, CUDA, HIP) and no phase exceeds its
memory. Flash attention is assumed supported by the backend for Wan's head size (it is
on CPU, Vulkan, CUDA and HIP in the pinned ggml).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanpy import _core
from wanpy.errors import AllocationTooLargeError, ModelFileError
from wanpy.model_files import GGML_TYPES, ModelKind, TensorInfo, _sdcpp_ne, identify_file
from wanpy.system import Device, devices
from wanpy.validation import MAX_NUM_FRAMES_BY_FAMILY, check_num_frames, check_size

logger = logging.getLogger("wanpy")

__all__ = ["PRESETS", "FIT_MODES", "Allocation", "FitChoice", "PhaseTotal", "Preflight", "choose_fit", "preflight",
           "parse_bytes", "refusal"]

GiB = 2**30
VK_DEFAULT_BLOCK = GiB  # ggml-vulkan's default sub-allocation block (buffer chunk) size
_GGML_TYPE_IDS = {name.lower(): tid for tid, (name, _block, _size) in GGML_TYPES.items()}


# --- presets: the published architectures, no file needed --------------------------------

@dataclass(frozen=True)
class _Preset:
    dit: str  # wanpy.testing.wan_layouts.DIT_CONFIGS key
    vae: str  # "2.1" or "2.2"
    two_experts: bool = False
    clip_vision: bool = False


PRESETS: dict[str, _Preset] = {
    "wan2.1-t2v-1.3b": _Preset("wan2.1-t2v-1.3b", "2.1"),
    "wan2.2-ti2v-5b": _Preset("wan2.2-ti2v-5b", "2.2"),
    "wan2.x-t2v-14b": _Preset("wan2.x-t2v-14b", "2.1"),
    "wan2.1-t2v-14b": _Preset("wan2.x-t2v-14b", "2.1"),
    "wan2.1-i2v-14b": _Preset("wan2.1-i2v-14b", "2.1", clip_vision=True),
    "wan2.1-flf2v-14b": _Preset("wan2.1-flf2v-14b", "2.1", clip_vision=True),
    "wan2.2-t2v-a14b": _Preset("wan2.x-t2v-14b", "2.1", two_experts=True),
    "wan2.2-i2v-a14b": _Preset("wan2.2-i2v-14b", "2.1", two_experts=True),
}
TEXT_ENCODER_PRESET = "umt5-xxl"
DEFAULT_PRESET_DTYPE = "f16"


def _parse_preset(name: str, what: str = "model") -> tuple[str, str] | None:
    base, _, dtype = name.strip().lower().partition(":")
    if base not in PRESETS and base != TEXT_ENCODER_PRESET:
        return None
    from wanpy.testing.wan_layouts import GGML_NAMES

    dtype = dtype or DEFAULT_PRESET_DTYPE
    if dtype not in GGML_NAMES:
        raise ValueError(f"unknown dtype {dtype!r} in {what} preset {name!r}; known: {', '.join(GGML_NAMES)}")
    return base, dtype


def _spec_tensors(specs: Any, prefix: str) -> list[tuple[str, int, list[int]]]:
    out = []
    for s in specs:
        info = TensorInfo(s.name, s.shape, s.ggml_type, 0, 0)
        ne = list(_sdcpp_ne(info, "gguf"))
        out.append((prefix + s.name, _GGML_TYPE_IDS[s.ggml_type.lower()], ne))
    return out


@functools.lru_cache(maxsize=32)
def _preset_tensors(kind: str, key: str, dtype: str, prefix: str) -> tuple[tuple[str, int, list[int]], ...]:
    from wanpy.testing import wan_layouts as wl

    if kind == "dit":
        specs = wl.dit_layout(wl.DIT_CONFIGS[key], dtype)
    elif kind == "vae":
        specs = wl.vae_layout(key)
    elif kind == "text_encoder":
        specs = wl.umt5_xxl_layout(dtype)
    else:
        specs = wl.clip_vision_h_layout()
    return tuple(_spec_tensors(specs, prefix))


# --- sizes --------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int) -> int:
    """Bytes from ``4GiB``, ``4096MiB``, ``4.5GB``, ``0xfffffffc`` or plain bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"a size must be positive, got {text}")
        return text
    if not isinstance(text, str):
        raise TypeError(f"a size must be a str or int, got {type(text).__name__}")
    s = text.strip().replace("_", "")
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
        value = int(s, 16)
    else:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", s)
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"not a size: {text!r} (use e.g. 4GiB, 4096MiB, 4.5GB, 0xfffffffc or bytes)")
        number = float(m.group(1))
        value = int(number * _SIZE_UNITS[m.group(2).lower()])
        if "." in m.group(1) and number * _SIZE_UNITS[m.group(2).lower()] != value:
            raise ValueError(f"size {text!r} is not a whole number of bytes")
    if value <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return value


def _fmt(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 2**20:.1f} MiB"


# --- results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Allocation:
    """One allocation ggml will make: ``name`` (what it is), ``phase`` (when: "load",
    "text encoding", "clip vision", "VAE encode", "high-noise sampling", "sampling",
    "VAE decode"), ``nbytes``. ``component`` is the model part; ``kind`` is
    "weights buffer", "weight tensor", "compute buffer", "tensor" or "host buffer" (the
    decoded video, when host memory is what does not fit); ``shape`` (ggml
    order) and ``dtype`` describe a single tensor; ``buffer_total`` is the whole buffer
    the chunk or tensor belongs to (ggml splits buffers at the device's buffer size)."""

    name: str
    phase: str
    nbytes: int
    component: str = ""
    kind: str = ""
    shape: tuple[int, ...] = ()
    dtype: str = ""
    buffer_total: int = 0
    on_device: bool = True  # False: in host memory (a VAE kept on the CPU), no device ceiling

    def __str__(self) -> str:
        return f"{self.name} ({self.phase}): {_fmt(self.nbytes)}"


@dataclass(frozen=True)
class PhaseTotal:
    """Device memory in use during one phase: resident weights + the phase's buffers.
    ``host`` is what the phase keeps in RAM instead (offloaded weights, a VAE kept on the CPU)."""

    phase: str
    device: int
    host: int = 0


@dataclass(frozen=True)
class Preflight:
    """The pre-flight report (see ``wanpy.preflight``). ``fits`` is True when every
    allocation is within ``max_allocation`` (None: no per-allocation ceiling) and every
    phase within ``total_memory`` (None: not checked). ``problems`` says what does not fit."""

    fits: bool
    largest: Allocation
    max_allocation: int | None
    total_memory: int | None
    allocations: tuple[Allocation, ...]
    phases: tuple[PhaseTotal, ...]
    peak: int
    suggestions: tuple[str, ...]
    problems: tuple[str, ...]
    model: str
    device: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        p = self.params
        lines = [
            f"pre-flight: {self.model}, {p['width']}x{p['height']}, {p['num_frames']} frames, "
            f"flash_attention={p['flash_attention']}, vae_tiling={p['vae_tiling']}",
            f"device: {self.device}; per-allocation ceiling {_fmt(self.max_allocation) if self.max_allocation else 'none'}"
            f"; memory {_fmt(self.total_memory) if self.total_memory else 'not checked'}",
            "",
            f"{'allocation':<58} {'phase':<20} {'size':>11}  fits",
        ]
        for a in sorted(self.allocations, key=lambda a: -a.nbytes):
            ok = self.max_allocation is None or a.nbytes <= self.max_allocation or not a.on_device
            where = "" if a.on_device else " (host)"
            lines.append(f"{(a.name[:58 - len(where)] + where):<58} {a.phase:<20} {_fmt(a.nbytes):>11}  "
                         f"{'yes' if ok else 'NO'}")
        lines += ["", f"{'phase':<24} {'device memory':>14} {'host memory':>12}"]
        for ph in self.phases:
            lines.append(f"{ph.phase:<24} {_fmt(ph.device):>14} {_fmt(ph.host):>12}")
        lines.append(f"{'peak':<24} {_fmt(self.peak):>14}")
        lines.append("")
        lines.append(f"largest single allocation: {self.largest.name}, {_fmt(self.largest.nbytes)}")
        lines.append("FITS" if self.fits else "DOES NOT FIT: " + "; ".join(self.problems))
        if self.suggestions:
            lines.append("what would fit instead:" if not self.fits else "notes:")
            lines += [f"  - {s}" for s in self.suggestions]
        return "\n".join(lines)


# --- the measuring session ----------------------------------------------------------------

@dataclass(frozen=True)
class _Sources:
    files: tuple[tuple[str, str], ...]
    presets: tuple[tuple[str, str, str, str], ...]  # (kind, key, dtype, prefix)
    label: str


def _file_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


_SESSIONS: dict[Any, Any] = {}


def _session(src: _Sources) -> Any:
    key = (tuple((_file_key(p), pre) for p, pre in src.files), src.presets)
    s = _SESSIONS.get(key)
    if s is None:
        tensors: list[tuple[str, int, list[int]]] = []
        for kind, k, dtype, prefix in src.presets:
            tensors.extend(_preset_tensors(kind, k, dtype, prefix))
        try:
            s = _core.MeasureSession(list(src.files), tensors)
        except _core.NativeError as e:
            raise ModelFileError(f"pre-flight: {e}") from None
        if len(_SESSIONS) >= 8:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = s
    return s


def _checked_file(path: str | os.PathLike[str], component: str, expected: str) -> tuple[str, ModelKind]:
    p = os.fspath(path)
    if not Path(p).is_file():
        raise FileNotFoundError(f"{component}: no such file: {p}")
    kind = identify_file(p)
    if kind.kind != expected:
        raise ModelFileError(f"{component}: {p} is not a {expected.replace('_', ' ')} file ({kind})", path=p)
    if not kind.supported:
        raise ModelFileError(f"{component}: sd.cpp cannot use {p}: {'; '.join(kind.problems) or kind}", path=p)
    return p, kind


_DIT_PREFIX = "model.diffusion_model."
_HIGH_PREFIX = "model.high_noise_diffusion_model."


def _sources(model: str | os.PathLike[str], *, vae: Any, text_encoder: Any, high_noise: Any,
             clip_vision: Any) -> _Sources:
    files: list[tuple[str, str]] = []
    presets: list[tuple[str, str, str, str]] = []
    preset = None
    parsed = _parse_preset(os.fspath(model)) if isinstance(model, str) and not Path(model).exists() else None
    if parsed is not None and parsed[0] != TEXT_ENCODER_PRESET:
        base, dtype = parsed
        preset = PRESETS[base]
        presets.append(("dit", preset.dit, dtype, _DIT_PREFIX))
        if preset.two_experts and high_noise is None:
            presets.append(("dit", preset.dit, dtype, _HIGH_PREFIX))
        label = f"{base}:{dtype}"
        vae_version = preset.vae
    else:
        if isinstance(model, str) and not Path(model).exists() and not re.search(r"[/\\.]", model):
            raise ValueError(f"{model!r} is neither a file nor a preset; presets: {', '.join(PRESETS)} "
                             "(optionally with :dtype, e.g. wan2.x-t2v-14b:q4_k)")
        path, kind = _checked_file(model, "diffusion_model", "dit")
        files.append((path, _DIT_PREFIX))
        label = Path(path).name
        vae_version = "2.2" if kind.family == "wan2.2-ti2v-5b" else "2.1"  # the family's published VAE
    if high_noise is not None:
        files.append((_checked_file(high_noise, "high_noise_diffusion_model", "dit")[0], _HIGH_PREFIX))
    if vae is not None:
        files.append((_checked_file(vae, "vae", "vae")[0], "vae."))
    else:
        presets.append(("vae", vae_version, "f16", "first_stage_model."))
    if text_encoder is not None:
        te = _parse_preset(text_encoder, "text_encoder") if isinstance(text_encoder, str) and not Path(
            text_encoder).exists() else None
        if te is not None:
            presets.append(("text_encoder", "", te[1], "text_encoders.t5xxl.transformer."))
        else:
            files.append((_checked_file(text_encoder, "text_encoder", "text_encoder")[0],
                          "text_encoders.t5xxl.transformer."))
    if clip_vision is not None:
        files.append((_checked_file(clip_vision, "clip_vision", "clip_vision")[0], "cond_stage_model.transformer."))
    elif preset is not None and preset.clip_vision:
        presets.append(("clip_vision", "", "f16", "cond_stage_model.transformer."))
    return _Sources(tuple(files), tuple(presets), label)


# --- the measurement for one configuration -------------------------------------------------

@dataclass(frozen=True)
class _Config:
    width: int
    height: int
    num_frames: int
    flash_attention: bool
    vae_tiling: bool
    offload_to_cpu: bool
    keep_vae_on_cpu: bool
    init_image: bool
    end_image: bool
    tile_size: tuple[int, int] | None
    tile_overlap: float


@dataclass(frozen=True)
class _Target:
    alignment: int
    chunk: int  # largest buffer ggml makes; 2**64-1: unbounded
    max_allocation: int | None
    total_memory: int | None
    name: str
    is_cpu: bool


def _tile(latent: int, requested: int, factor: float = 1.0) -> int:
    """sd.cpp's VAE::get_tile_sizes for one axis (rel size 0)."""
    size = requested if requested >= 4 else 32
    size = int(size * factor)
    return max(min(size, latent), 4)


def _largest_first(a: Allocation) -> tuple[int, bool]:
    """Biggest first; at equal size the tensor before the buffer chunk it fills."""
    return (-a.nbytes, a.kind not in ("tensor", "weight tensor"))


def _buffer(total: int, largest: int, chunk: int) -> int:
    """The largest single buffer ggml makes for a buffer of ``total`` bytes."""
    if total <= chunk:
        return total
    return max(min(chunk, total), largest)


# The DiTs whose conditioning VAE-encodes the whole clip (start/end frames, grey elsewhere).
_ENCODES_WHOLE_CLIP = ("Wan2.1-I2V-14B", "Wan2.2-I2V-14B", "Wan2.1-I2V-1.3B", "Wan2.1-FLF2V-14B")


def longest_clip(desc: str) -> int:
    """The most frames sd.cpp can build this DiT's VAE graphs for (``dit_desc``); beyond it
    ggml aborts the process, in sd.cpp and in the pre-flight's own measurement alike."""
    if desc in _ENCODES_WHOLE_CLIP:
        return MAX_NUM_FRAMES_BY_FAMILY["wan2.1-i2v-14b"]
    if desc == "Wan2.2-TI2V-5B":
        return MAX_NUM_FRAMES_BY_FAMILY["wan2.2-ti2v-5b"]
    return MAX_NUM_FRAMES_BY_FAMILY["wan2.1-t2v-1.3b"]


def host_video_bytes(width: int, height: int, num_frames: int) -> int:
    """Host memory a generation's decoded video takes at its peak: sd.cpp's f32 tensor
    (12 B a pixel) and its uint8 frames (3 B), whatever the device."""
    return 15 * width * height * num_frames


def _host_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _measure(s: Any, cfg: _Config, t: _Target, weights_only: bool = False
             ) -> tuple[list[Allocation], list[PhaseTotal], str, str | None]:
    """Every allocation and phase total, the DiT's description, and a host-memory problem
    (then the graphs are not measured)."""
    desc = s.dit_desc(False)
    ti2v = desc == "Wan2.2-TI2V-5B"
    scale = 16 if ti2v else 8
    z_dim = 48 if ti2v else 16
    w, h, t_lat = cfg.width // scale, cfg.height // scale, (cfg.num_frames - 1) // 4 + 1
    has_te = s.has("text_encoders.t5xxl.transformer.")
    has_hn = s.has(_HIGH_PREFIX)
    i2v = desc in _ENCODES_WHOLE_CLIP
    clip_images = 0
    if desc in ("Wan2.1-I2V-14B", "Wan2.1-I2V-1.3B"):
        clip_images = 1
    elif desc == "Wan2.1-FLF2V-14B":
        clip_images = 2
    fa, al, ch = cfg.flash_attention, t.alignment, t.chunk

    allocs: list[Allocation] = []
    weights: dict[str, int] = {}
    components = ["diffusion_model"] + (["high_noise_diffusion_model"] if has_hn else []) + ["vae"]
    if has_te:
        components.append("text_encoder")
    if clip_images:
        if not s.has("cond_stage_model.transformer."):
            raise ModelFileError(f"{desc} needs a CLIP vision model (clip_vision=...)")
        components.append("clip_vision")
    for comp in components:
        m = s.weights(comp, al, ch)
        weights[comp] = int(m["total"])
        allocs.append(Allocation(f"{comp} weights", "load", _buffer(m["total"], m["largest"], ch), comp,
                                 "weights buffer", buffer_total=int(m["total"])))
        allocs.append(Allocation(f"{comp} largest weight tensor ({m['type']} {_shape(m['shape'])})", "load",
                                 int(m["largest"]), comp, "weight tensor", tuple(m["shape"]), m["type"],
                                 int(m["total"])))

    on_host = {"vae"} if cfg.keep_vae_on_cpu and not t.is_cpu else set()
    allocs = [dataclasses.replace(a, on_device=False) if a.component in on_host else a for a in allocs]
    resident = 0 if cfg.offload_to_cpu else sum(v for k, v in weights.items() if k not in on_host)
    host_weights = sum(weights.values()) - resident
    video = host_video_bytes(cfg.width, cfg.height, cfg.num_frames)
    if not weights_only and video > _host_memory():
        # sd.cpp cannot hold the decoded video on this machine; measuring the graphs would itself
        # allocate (zero-filled) latents of the request's size, tens of GB at the largest sizes
        allocs.append(Allocation("decoded video, f32 and uint8 (host memory)", "VAE decode", video, "vae",
                                 "host buffer", on_device=False))
        problem = (f"the decoded video needs {_fmt(video)} of host memory (sd.cpp holds it as f32, then as "
                   f"uint8); this machine has {_fmt(_host_memory())}")
        return allocs, [PhaseTotal("load", resident, host_weights)], desc, problem

    graphs: list[tuple[str, str, dict]] = []  # (phase, component, measured)
    if weights_only:
        pass
    elif has_te:
        graphs.append(("text encoding", "text_encoder", s.t5_graph(512, fa, al, ch)))
    if clip_images and (cfg.init_image or cfg.end_image):
        graphs.append(("clip vision", "clip_vision", s.clip_vision_graph(fa, al, ch)))
    if weights_only:
        pass
    elif i2v:
        # sd.cpp encodes the whole conditioning video (start/end frames, grey elsewhere)
        graphs.append(("VAE encode", "vae", _vae(s, False, cfg, cfg.width, cfg.height, cfg.num_frames, scale, fa, al, ch)))
    elif ti2v and cfg.init_image:
        graphs.append(("VAE encode", "vae", _vae(s, False, cfg, cfg.width, cfg.height, 1, scale, fa, al, ch)))
    context = [4096, 512 if has_te else 256]
    clip_fea = [1280, 257 * clip_images] if clip_images else []
    c_concat = [w, h, t_lat, 20] if i2v else []
    x = [w, h, t_lat, z_dim]
    steps_in = t_lat if ti2v else 1  # sd.cpp gives TI2V-5B one timestep per latent frame
    if has_hn and not weights_only:
        graphs.append(("high-noise sampling", "high_noise_diffusion_model",
                       s.dit_graph(True, x, context, clip_fea, c_concat, steps_in, fa, al, ch)))
    if not weights_only:
        graphs.append(("sampling", "diffusion_model", s.dit_graph(False, x, context, clip_fea, c_concat, steps_in, fa, al, ch)))
        graphs.append(("VAE decode", "vae", _vae(s, True, cfg, w, h, t_lat, scale, fa, al, ch)))

    phases = [PhaseTotal("load", resident, host_weights)]
    for phase, comp, m in graphs:
        total, largest = int(m["total"]), int(m["largest"])
        dev = comp not in on_host
        allocs.append(Allocation(f"{comp} compute buffer", phase, _buffer(total, largest, ch), comp,
                                 "compute buffer", buffer_total=total, on_device=dev))
        allocs.append(Allocation(f"{comp} {m['op'].lower()} {m['type']} {_shape(m['shape'])}", phase, largest, comp,
                                 "tensor", tuple(m["shape"]), m["type"], total, dev))
        if comp in on_host:
            phases.append(PhaseTotal(phase, resident, host_weights + total))
        else:
            extra = weights[comp] if cfg.offload_to_cpu else 0
            phases.append(PhaseTotal(phase, resident + extra + total, host_weights))
    return allocs, phases, desc, None


def _vae(s: Any, decode: bool, cfg: _Config, w: int, h: int, frames: int, scale: int, fa: bool, al: int,
         ch: int) -> dict:
    if decode:
        if cfg.vae_tiling:
            tx, ty = cfg.tile_size or (0, 0)
            w, h = _tile(w, tx), _tile(h, ty)
        return s.vae_graph(True, [w, h, frames, 48 if scale == 16 else 16], fa, al, ch)
    if cfg.vae_tiling:
        tx, ty = cfg.tile_size or (0, 0)
        lw, lh = w // scale, h // scale
        w = _tile(lw, tx, 1.30539) * scale
        h = _tile(lh, ty, 1.30539) * scale
    return s.vae_graph(False, [w, h, frames, 3], fa, al, ch)


def _shape(ne: Any) -> str:
    return "[" + ", ".join(str(int(d)) for d in ne) + "]"


def _evaluate(s: Any, cfg: _Config, t: _Target, weights_only: bool = False
              ) -> tuple[bool, Allocation, tuple[Allocation, ...], tuple[PhaseTotal, ...], int, tuple[str, ...], str]:
    allocs, phases, desc, host_problem = _measure(s, cfg, t, weights_only)
    largest = min([a for a in allocs if a.on_device] or allocs, key=_largest_first)
    peak = max(p.device for p in phases)
    problems = [host_problem] if host_problem else []
    if t.max_allocation is not None:
        if largest.nbytes > t.max_allocation:
            a = largest
            problems.append(f"{a.name} ({a.phase}) needs {_fmt(a.nbytes)} ({a.nbytes:,} B) in one allocation; "
                            f"the device allows {_fmt(t.max_allocation)} ({t.max_allocation:,} B)")
    if t.total_memory is not None and peak > t.total_memory:
        worst = max(phases, key=lambda p: p.device)
        problems.append(f"{worst.phase} needs {_fmt(worst.device)} of device memory; the device has "
                        f"{_fmt(t.total_memory)}")
    return not problems, largest, tuple(allocs), tuple(phases), peak, tuple(problems), desc


# --- suggestions ----------------------------------------------------------------------------

def _fits(s: Any, cfg: _Config, t: _Target) -> tuple[bool, int]:
    ok, largest, *_ = _evaluate(s, cfg, t)
    return ok, largest.nbytes


def _suggest(s: Any, cfg: _Config, t: _Target, multiple: int, host_bound: bool = False) -> tuple[str, ...]:
    """What would fit instead. ``host_bound``: the decoded video exceeds host memory, which no
    device setting changes: only fewer frames or a smaller size are suggested."""
    out: list[str] = []
    options = []
    if not host_bound:
        if not cfg.flash_attention:
            options.append(("flash_attention=True", dataclasses.replace(cfg, flash_attention=True)))
        if not cfg.vae_tiling:
            options.append(("vae_tiling=True", dataclasses.replace(cfg, vae_tiling=True)))
        if not cfg.flash_attention and not cfg.vae_tiling:
            options.append(("flash_attention=True and vae_tiling=True",
                            dataclasses.replace(cfg, flash_attention=True, vae_tiling=True)))
        if not t.is_cpu and not cfg.keep_vae_on_cpu:
            options.append(("keep_vae_on_cpu=True", dataclasses.replace(cfg, keep_vae_on_cpu=True)))
        if not t.is_cpu and not cfg.offload_to_cpu:
            options.append(("offload_to_cpu=True", dataclasses.replace(cfg, offload_to_cpu=True)))
    for label, c in options:
        ok, largest = _fits(s, c, t)
        out.append(f"{label}: largest becomes {_fmt(largest)}" + (" and it fits" if ok else ", still does not fit"))
    best = None if host_bound else _choose(s, cfg, t)[0]
    if best is not None:
        out.insert(0, f"fit='auto' would choose {_changes(cfg, best)}: the cheapest settings that fit")
    # frames at this size, with the cheapest option set that fits (or all cheap ones on)
    search = best or _smallest_vae_tile(s, dataclasses.replace(cfg, flash_attention=True, vae_tiling=True), t)
    with_opts = "" if search == cfg else " (" + _changes(cfg, search) + ")"
    k = _largest_fitting(lambda k: _fits(s, dataclasses.replace(search, num_frames=4 * k + 1), t)[0],
                         (cfg.num_frames - 1) // 4)
    if k is not None:
        out.append(f"at {cfg.width}x{cfg.height} at most {4 * k + 1} frames fit{with_opts}")
    else:
        out.append(f"at {cfg.width}x{cfg.height} not even 1 frame fits{with_opts}")
    # size at these frames, same aspect ratio
    aspect = cfg.height / cfg.width

    def size_for(n: int) -> tuple[int, int]:
        wd = n * multiple
        return wd, max(multiple, round(wd * aspect / multiple) * multiple)

    n = _largest_fitting(lambda n: _fits(s, dataclasses.replace(search, width=size_for(n)[0],
                                                                 height=size_for(n)[1]), t)[0],
                         cfg.width // multiple, start=1)
    if n is not None:
        wd, ht = size_for(n)
        out.append(f"at {cfg.num_frames} frames at most {wd}x{ht} fits (same aspect){with_opts}")
    if t.max_allocation is not None:
        out.append("a HIP, CUDA or CPU build has no per-allocation ceiling")
    return tuple(out)


def _smallest_vae_tile(s: Any, cfg: _Config, t: _Target) -> _Config:
    """With tiling and no tile size asked: the largest tile whose VAE allocations fit."""
    if t.max_allocation is None or cfg.tile_size is not None:
        return cfg
    limit = t.max_allocation

    def vae_fits(n: int) -> bool:
        allocs = _measure(s, dataclasses.replace(cfg, tile_size=(n, n)), t)[0]
        return all(a.nbytes <= limit for a in allocs if a.component == "vae")

    n = _largest_fitting(vae_fits, 32, start=4)
    return cfg if n in (None, 32) else dataclasses.replace(cfg, tile_size=(n, n))


def _changes(a: _Config, b: _Config) -> str:
    return ", ".join(f"{f.name}={getattr(b, f.name)}" for f in dataclasses.fields(a)
                     if getattr(a, f.name) != getattr(b, f.name))


def _largest_fitting(ok: Any, upper: int, start: int = 0) -> int | None:
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


# --- the public function ---------------------------------------------------------------------

def _target(device: Device | int | None, max_allocation: int | str | None, total_memory: int | str | None) -> _Target:
    if isinstance(device, Device):
        dev = device
    elif device is None:
        devs = devices()
        dev = next((d for d in devs if d.type != "cpu"), devs[-1])
    else:
        devs = devices()
        index = device.index if isinstance(device, Device) else device
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"device must be a wanpy.Device or an index, got {type(device).__name__}")
        matches = [d for d in devs if d.index == index]
        if not matches:
            raise ValueError(f"device {index} does not exist; devices: "
                             f"{', '.join(f'{d.index} {d.name}' for d in devs)}")
        dev = matches[0]
    limit = dev.max_allocation if max_allocation is None else parse_bytes(max_allocation)
    chunk = dev.buffer_max_size or 2**64 - 1
    if max_allocation is not None:
        # a device with a per-allocation ceiling, as ggml-vulkan splits buffers for it
        chunk = min(chunk, VK_DEFAULT_BLOCK, limit) if dev.buffer_max_size else min(VK_DEFAULT_BLOCK, limit)
    if total_memory is not None:
        memory: int | None = parse_bytes(total_memory)
    elif max_allocation is not None:
        memory = None  # a modelled device: its memory is only checked when given
    else:
        memory = dev.total_memory
    name = dev.name + (f" with max_allocation {_fmt(limit)}" if max_allocation is not None else "") + \
        (f" with total_memory {_fmt(memory)}" if total_memory is not None else "")
    # a modelled device (max_allocation given) is a GPU: keeping the VAE on the CPU and
    # offloading weights are options there
    return _Target(dev.buffer_alignment, chunk, limit, memory or None, name,
                   dev.type == "cpu" and max_allocation is None)


def preflight(model: str | os.PathLike[str], *, width: int, height: int, num_frames: int,
              flash_attention: bool = False, vae_tiling: bool = False,
              text_encoder: str | os.PathLike[str] | None = None, vae: str | os.PathLike[str] | None = None,
              high_noise_diffusion_model: str | os.PathLike[str] | None = None, offload_to_cpu: bool = False,
              keep_vae_on_cpu: bool = False, device: Device | int | None = None,
              max_allocation: int | str | None = None, total_memory: int | str | None = None,
              clip_vision: str | os.PathLike[str] | None = None, init_image: bool = False,
              end_image: bool = False, tile_size: tuple[int, int] | None = None, tile_overlap: float = 0.5,
              suggest: bool = True, weights_only: bool = False) -> Preflight:
    """What a generation will allocate, and whether it fits, before loading anything.

    Args:
        model: a Wan DiT file (GGUF or safetensors; only its header is read) or a preset:
            ``wan2.1-t2v-1.3b``, ``wan2.2-ti2v-5b``, ``wan2.x-t2v-14b`` (= ``wan2.1-t2v-14b``),
            ``wan2.1-i2v-14b``, ``wan2.1-flf2v-14b``, ``wan2.2-t2v-a14b``, ``wan2.2-i2v-a14b``,
            optionally with a weight dtype: ``wan2.x-t2v-14b:q4_k`` (default f16).
        width, height, num_frames: the request (num_frames 4k+1, sizes as the family needs).
        flash_attention, vae_tiling, offload_to_cpu, keep_vae_on_cpu: as for ``WanPipeline``.
        text_encoder: umt5-xxl file, or the preset ``"umt5-xxl[:dtype]"``; None: no text
            encoder (sd.cpp then uses a zero context).
        vae: the VAE file; None: the published VAE of the model's family (F16).
        high_noise_diffusion_model: Wan2.2 A14B's high-noise expert (a preset brings its own).
        device: a ``wanpy.Device`` or index; default the device a pipeline would use.
        max_allocation, total_memory: override the device's figures (bytes or "4GiB"); with
            ``max_allocation`` the device is modelled as a Vulkan device of that ceiling.
        clip_vision: CLIP ViT-H file for Wan2.1 I2V/FLF2V (presets bring their own).
        init_image, end_image: whether images go in (adds VAE encode / CLIP vision phases).
        tile_size, tile_overlap: VAE tile size in latent pixels (default: sd.cpp's 32).
        suggest: compute ``suggestions`` (alternatives re-measured to fit).
        weights_only: only the weights and the load phase (what a pipeline checks before
            loading; the size arguments are then only used for validation).

    Returns:
        ``wanpy.Preflight``; ``str(report)`` is a table.
    """
    started = time.perf_counter()
    _check_flags(suggest=suggest)
    s, cfg, t, label, multiple = _prepare(
        model, width=width, height=height, num_frames=num_frames, flash_attention=flash_attention,
        vae_tiling=vae_tiling, text_encoder=text_encoder, vae=vae, high_noise=high_noise_diffusion_model,
        offload_to_cpu=offload_to_cpu, keep_vae_on_cpu=keep_vae_on_cpu, device=device,
        max_allocation=max_allocation, total_memory=total_memory, clip_vision=clip_vision,
        init_image=init_image, end_image=end_image, tile_size=tile_size, tile_overlap=tile_overlap)
    return _report(s, cfg, t, label, multiple, started, suggest=suggest, weights_only=weights_only)


def _check_flags(**flags: Any) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")


def _prepare(model: str | os.PathLike[str], *, width: int, height: int, num_frames: int, flash_attention: bool,
             vae_tiling: bool, text_encoder: Any, vae: Any, high_noise: Any, offload_to_cpu: bool,
             keep_vae_on_cpu: bool, device: Device | int | None, max_allocation: int | str | None,
             total_memory: int | str | None, clip_vision: Any, init_image: bool, end_image: bool,
             tile_size: tuple[int, int] | None, tile_overlap: float) -> tuple[Any, _Config, _Target, str, int]:
    """Validated request, measuring session and target device."""
    _check_flags(flash_attention=flash_attention, vae_tiling=vae_tiling, offload_to_cpu=offload_to_cpu,
                 keep_vae_on_cpu=keep_vae_on_cpu, init_image=init_image, end_image=end_image)
    src = _sources(model, vae=vae, text_encoder=text_encoder, high_noise=high_noise, clip_vision=clip_vision)
    s = _session(src)
    desc = s.dit_desc(False)
    num_frames = check_num_frames(num_frames, maximum=longest_clip(desc))
    multiple = 32 if desc == "Wan2.2-TI2V-5B" else 16
    width, height = check_size(width, height, multiple, desc)
    cfg = _Config(width, height, num_frames, flash_attention, vae_tiling, offload_to_cpu, keep_vae_on_cpu,
                  init_image, end_image, tile_size, tile_overlap)
    return s, cfg, _target(device, max_allocation, total_memory), src.label, multiple


def _report(s: Any, cfg: _Config, t: _Target, label: str, multiple: int, started: float, *, suggest: bool,
            weights_only: bool = False) -> Preflight:
    fits, largest, allocs, phases, peak, problems, desc = _evaluate(s, cfg, t, weights_only)
    host_bound = any(a.kind == "host buffer" for a in allocs)
    suggestions = _suggest(s, cfg, t, multiple, host_bound) if suggest and not fits and not weights_only else ()
    if suggest and fits and t.max_allocation is not None:
        headroom = t.max_allocation - largest.nbytes
        suggestions = (f"largest allocation leaves {_fmt(headroom)} below the ceiling",)
    params = {"width": cfg.width, "height": cfg.height, "num_frames": cfg.num_frames,
              "flash_attention": cfg.flash_attention, "vae_tiling": cfg.vae_tiling,
              "offload_to_cpu": cfg.offload_to_cpu, "keep_vae_on_cpu": cfg.keep_vae_on_cpu,
              "init_image": cfg.init_image, "end_image": cfg.end_image, "tile_size": cfg.tile_size,
              "tile_overlap": cfg.tile_overlap, "model": label, "alignment": t.alignment,
              "buffer_max_size": None if t.chunk >= 2**63 else t.chunk}
    return Preflight(fits, largest, t.max_allocation, t.total_memory, allocs, phases, peak, suggestions, problems,
                     f"{desc} ({label})", t.name, params, time.perf_counter() - started)


# --- fit="auto": the cheapest settings that fit -----------------------------------------------

FIT_MODES = ("strict", "auto")
FIT_SETTINGS = ("flash_attention", "vae_tiling", "tile_size", "keep_vae_on_cpu", "offload_to_cpu")


@dataclass(frozen=True)
class FitChoice:
    """What ``fit="auto"`` chose (``wanpy.preflight.choose_fit``).

    ``settings`` holds the chosen value of each of ``FIT_SETTINGS``; ``changed`` maps each
    setting that differs from the request to ``(asked, chosen)``; ``report`` is the
    pre-flight of the chosen settings; ``tried`` counts the setting sets measured."""

    settings: dict[str, Any]
    changed: dict[str, tuple[Any, Any]]
    report: Preflight
    tried: int

    def as_params(self) -> dict[str, Any]:
        """The record ``video.params["fit"]`` keeps."""
        return {"mode": "auto", "changed": {k: {"asked": a, "chosen": c} for k, (a, c) in self.changed.items()},
                "tried": self.tried}


def _fit_candidates(cfg: _Config, t: _Target, fits: Any) -> Any:
    """Setting sets in order of cost, cheapest first; never turns a setting off.

    Flash attention computes the same attention and is the cheapest; VAE tiling at sd.cpp's
    default tile next; then smaller tiles (more of them, slower); then the VAE on the CPU;
    then offloading the weights (slowest). ``fits(cfg)`` decides tile bisections."""
    cheap = [n for n in ("flash_attention", "vae_tiling") if not getattr(cfg, n)]
    costly = [] if t.is_cpu else [n for n in ("keep_vae_on_cpu", "offload_to_cpu") if not getattr(cfg, n)]
    for tier in range(1 << len(costly)):
        base = dataclasses.replace(cfg, **{n: True for i, n in enumerate(costly) if tier >> i & 1})
        subsets = [dataclasses.replace(base, **{n: True for i, n in enumerate(cheap) if mask >> i & 1})
                   for mask in range(1 << len(cheap))]
        yield from subsets
        if cfg.tile_size is not None:
            continue  # the caller chose the tile size: kept
        for c in subsets:
            if c.vae_tiling:
                n = _largest_fitting(lambda n, c=c: fits(dataclasses.replace(c, tile_size=(n, n))), 31, start=4)
                if n is not None:
                    yield dataclasses.replace(c, tile_size=(n, n))


def choose_fit(model: str | os.PathLike[str], *, width: int, height: int, num_frames: int,
               flash_attention: bool = False, vae_tiling: bool = False, offload_to_cpu: bool = False,
               keep_vae_on_cpu: bool = False, tile_size: tuple[int, int] | None = None,
               tile_overlap: float = 0.5, text_encoder: str | os.PathLike[str] | None = None,
               vae: str | os.PathLike[str] | None = None,
               high_noise_diffusion_model: str | os.PathLike[str] | None = None,
               clip_vision: str | os.PathLike[str] | None = None, device: Device | int | None = None,
               max_allocation: int | str | None = None, total_memory: int | str | None = None,
               init_image: bool = False, end_image: bool = False) -> FitChoice:
    """The cheapest settings under which the request fits (what ``fit="auto"`` uses).

    Takes ``preflight``'s arguments. Settings already on stay on; size and frames are never
    changed. Raises ``AllocationTooLargeError`` (with the pre-flight's suggestions, which
    include the frames and sizes that would fit) when no setting set fits.
    """
    started = time.perf_counter()
    s, cfg, t, label, multiple = _prepare(
        model, width=width, height=height, num_frames=num_frames, flash_attention=flash_attention,
        vae_tiling=vae_tiling, text_encoder=text_encoder, vae=vae, high_noise=high_noise_diffusion_model,
        offload_to_cpu=offload_to_cpu, keep_vae_on_cpu=keep_vae_on_cpu, device=device,
        max_allocation=max_allocation, total_memory=total_memory, clip_vision=clip_vision,
        init_image=init_image, end_image=end_image, tile_size=tile_size, tile_overlap=tile_overlap)
    c, tried = _choose(s, cfg, t)
    if c is None:
        raise refusal(_report(s, cfg, t, label, multiple, started, suggest=True))
    report = _report(s, c, t, label, multiple, started, suggest=False)
    settings = {n: getattr(c, n) for n in FIT_SETTINGS}
    changed = {n: (getattr(cfg, n), v) for n, v in settings.items() if getattr(cfg, n) != v}
    logger.info("fit='auto': %s (%d setting sets measured)",
                ", ".join(f"{n}={v[1]}" for n, v in changed.items()) or "fits as asked", tried)
    return FitChoice(settings, changed, report, tried)


def _choose(s: Any, cfg: _Config, t: _Target) -> tuple[_Config | None, int]:
    """The first setting set of ``_fit_candidates`` that fits, and how many were measured."""
    measured: dict[_Config, bool] = {}  # a tile bisection's answer is not measured again

    def fits(c: _Config) -> bool:
        if c not in measured:
            measured[c] = _fits(s, c, t)[0]
        return measured[c]

    chosen = next((c for c in _fit_candidates(cfg, t, fits) if fits(c)), None)
    return chosen, len(measured)


def refusal(report: Preflight) -> AllocationTooLargeError:
    """The exception a pipeline raises for a report that does not fit."""
    a = report.largest
    host = next((x for x in report.allocations if x.kind == "host buffer"), None)
    if host is not None:
        required, limit, what = host.nbytes, _host_memory(), host
    elif report.max_allocation is not None and a.nbytes > report.max_allocation:
        required, limit, what = a.nbytes, report.max_allocation, a
    else:
        worst = max(report.phases, key=lambda p: p.device)
        required, limit, what = worst.device, report.total_memory or 0, worst
    message = f"pre-flight: {report.model} at {report.params['width']}x{report.params['height']}, " \
              f"{report.params['num_frames']} frames does not fit on {report.device}: " + "; ".join(report.problems)
    if report.suggestions:
        message += ". What would fit instead: " + "; ".join(report.suggestions)
    message += ". (preflight=False skips this check.)"
    assert limit is not None
    return AllocationTooLargeError(message, required=required, limit=limit, allocation=what,
                                   suggestions=report.suggestions)
