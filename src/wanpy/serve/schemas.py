"""The two request shapes ``wanpy serve`` accepts, strict: OpenAI's Videos API (with wanpy's options
as documented extras) and sd.cpp's server ``vid_gen`` schema.

Every model forbids unknown fields and converts nothing silently (strict types: "4" is not 4).
Each maps onto ``wanpy.RequestOptions`` (``to_options``), which ``build_request`` then checks value by
value. A field that sd-server would accept and then ignore or default (``eta``, ``img_cfg``,
``clip_skip``, a ``video_frames`` that is not 4k+1, ...) is refused with the reason, never dropped.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any, Literal

import numpy as np
try:
    from pydantic import BaseModel, ConfigDict
except ImportError as exc:
    raise ImportError("wanpy.serve needs FastAPI and pydantic: pip install \"wanpy[serve]\"") from exc

__all__ = ["FieldError", "OpenAIVideoCreate", "SdcppVidGen", "decode_image", "misplaced_hint"]

MAX_IMAGE_BYTES = 16 * 2**20  # one encoded input image
MAX_IMAGE_PIXELS = 4096 * 4096


class FieldError(ValueError):
    """A value refused with the field it belongs to (a dotted path in the request body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"([1-9][0-9]{0,5})x([1-9][0-9]{0,5})", text)
    if not m:
        raise FieldError("size", f"must be WIDTHxHEIGHT, e.g. 832x480, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def decode_image(field: str, data: str | bytes) -> np.ndarray:
    """A base64 string, a data URL or raw file bytes (PNG, JPEG or WebP, at most 4096x4096), as an RGB
    uint8 (H, W, 3) array; modes that do not convert to RGB losslessly are refused, as everywhere in wanpy."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from wanpy.validation import _pil_to_array

    if isinstance(data, str):
        payload = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise FieldError(field, "is not base64 (or a data: URL of base64)") from None
    else:
        raw = data
    if len(raw) > MAX_IMAGE_BYTES:
        raise FieldError(field, f"the image is {len(raw)} bytes; at most {MAX_IMAGE_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=("PNG", "JPEG", "WEBP")) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise FieldError(field, f"is {image.width}x{image.height}; at most {MAX_IMAGE_PIXELS} pixels")
                return _pil_to_array(field, image, "the request")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FieldError(field, "is not an image wanpy reads here (PNG, JPEG or WebP)") from None
    except ValueError as exc:
        if isinstance(exc, FieldError):
            raise
        raise FieldError(field, str(exc).removeprefix(f"{field}: ")) from None


# --- OpenAI's Videos API --------------------------------------------------------------------
class OpenAIVideoCreate(_Strict):
    """``POST /v1/videos``: OpenAI's fields (``seconds`` a string, as OpenAI's are; ``size``
    "WIDTHxHEIGHT"; ``model`` this server's model id) and wanpy's own options as extras (the
    client's ``extra_body``)."""

    prompt: str
    model: str | None = None
    seconds: str | None = None
    size: str | None = None
    negative_prompt: str | None = None
    num_frames: int | None = None
    fps: int | float | None = None
    align: Literal["down", "up"] | None = None
    steps: int | None = None
    cfg_scale: int | float | None = None
    flow_shift: int | float | None = None
    sample_method: str | None = None
    scheduler: str | None = None
    seed: int | None = None
    moe_boundary: int | float | None = None
    high_noise_steps: int | None = None
    high_noise_cfg_scale: int | float | None = None
    high_noise_sample_method: str | None = None
    high_noise_scheduler: str | None = None
    vae_tiling: bool | None = None
    tile_size: list[int] | None = None
    tile_overlap: int | float | None = None
    fit: Literal["strict", "auto"] | None = None
    cache: str | None = None
    preview: Literal["proj", "vae", "tae"] | None = None
    preview_every: int | None = None

    def to_options(self) -> dict[str, Any]:
        options = self.model_dump(exclude_none=True, exclude={"prompt", "model", "seconds", "size"})
        if self.tile_size is not None:
            if len(self.tile_size) != 2:
                raise FieldError("tile_size", f"must be two integers [x, y], got {self.tile_size}")
            options["tile_size"] = tuple(self.tile_size)
        if self.size is not None:
            options["width"], options["height"] = _size(self.size)
        if self.seconds is not None:
            if not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", self.seconds):
                raise FieldError("seconds", f"must be a number of seconds as a string, e.g. \"4\", got {self.seconds!r}")
            if self.num_frames is not None:
                raise FieldError("seconds", "give seconds or num_frames, not both")
            options["duration"] = float(self.seconds)
        return options


# form fields (multipart, as the openai client sends videos.create) arrive as text: their types
_FORM_INT = {"num_frames", "steps", "seed", "high_noise_steps", "preview_every"}
_FORM_FLOAT = {"fps", "cfg_scale", "flow_shift", "moe_boundary", "high_noise_cfg_scale", "tile_overlap"}
_FORM_BOOL = {"vae_tiling"}


def form_value(name: str, text: str) -> Any:
    """A multipart text field as the JSON value it stands for (strictly: "4.0" is no integer)."""
    if name in _FORM_INT:
        if not re.fullmatch(r"-?[0-9]{1,19}", text):
            raise FieldError(name, f"must be an integer, got {text!r}")
        return int(text)
    if name in _FORM_FLOAT:
        if not re.fullmatch(r"-?[0-9]{1,19}(\.[0-9]{1,19})?([eE][-+]?[0-9]{1,3})?", text):
            raise FieldError(name, f"must be a number, got {text!r}")
        return float(text)
    if name in _FORM_BOOL:
        if text not in ("true", "false"):
            raise FieldError(name, f"must be true or false, got {text!r}")
        return text == "true"
    if name == "tile_size":
        raise FieldError(name, "send JSON (a list of two integers) for tile_size, not a form field")
    return text


# --- sd.cpp's server: vid_gen -----------------------------------------------------------------
class SdcppSlg(_Strict):
    layers: list[int] | None = None
    layer_start: int | float | None = None
    layer_end: int | float | None = None
    scale: int | float | None = None


class SdcppGuidance(_Strict):
    txt_cfg: int | float | None = None
    img_cfg: int | float | None = None
    distilled_guidance: int | float | None = None
    slg: SdcppSlg | None = None


class SdcppSampleParams(_Strict):
    scheduler: str | None = None
    sample_method: str | None = None
    sample_steps: int | None = None
    eta: int | float | None = None
    shifted_timestep: int | None = None
    custom_sigmas: list[int | float] | None = None
    flow_shift: int | float | None = None
    guidance: SdcppGuidance | None = None


class SdcppLora(_Strict):
    path: str
    multiplier: int | float = 1.0
    is_high_noise: bool = False


class SdcppVaeTiling(_Strict):
    enabled: bool = False
    tile_size_x: int = 0
    tile_size_y: int = 0
    target_overlap: int | float | None = None
    rel_size_x: int | float = 0.0
    rel_size_y: int | float = 0.0


class SdcppVidGen(_Strict):
    """``POST /sdcpp/v1/vid_gen`` (sd.cpp's ``examples/server/api.md``)."""

    prompt: str
    negative_prompt: str | None = None
    clip_skip: int | None = None
    width: int | None = None
    height: int | None = None
    strength: int | float | None = None
    seed: int | None = None
    video_frames: int | None = None
    fps: int | None = None
    moe_boundary: int | float | None = None
    vace_strength: int | float | None = None
    init_image: str | None = None
    end_image: str | None = None
    control_frames: list[str] | None = None
    sample_params: SdcppSampleParams | None = None
    high_noise_sample_params: SdcppSampleParams | None = None
    lora: list[SdcppLora] | None = None
    vae_tiling_params: SdcppVaeTiling | None = None
    cache_mode: str | None = None
    cache_option: str | None = None
    scm_mask: str | None = None
    scm_policy_dynamic: bool | None = None
    output_format: str | None = None
    output_compression: int | None = None

    def to_options(self) -> dict[str, Any]:
        o: dict[str, Any] = {}
        _refuse_ignored(self)
        for name, target in (("negative_prompt", "negative_prompt"), ("width", "width"), ("height", "height"),
                             ("strength", "strength"), ("video_frames", "num_frames"), ("fps", "fps"),
                             ("moe_boundary", "moe_boundary"), ("vace_strength", "vace_strength")):
            value = getattr(self, name)
            if value is not None:
                o[target] = value
        if self.seed is not None and self.seed != -1:
            o["seed"] = self.seed  # -1: random, as sd-server
        for name in ("init_image", "end_image"):
            value = getattr(self, name)
            if value is not None:
                o[name] = decode_image(name, value)
        if self.control_frames:
            frames = [decode_image(f"control_frames[{i}]", f) for i, f in enumerate(self.control_frames)]
            for i, frame in enumerate(frames):
                if frame.shape != frames[0].shape:
                    raise FieldError(f"control_frames[{i}]", f"is {frame.shape[1]}x{frame.shape[0]}; control_frames[0] "
                                                             f"is {frames[0].shape[1]}x{frames[0].shape[0]}")
            o["control_video"] = np.stack(frames)
        _sampling(o, self.sample_params, "sample_params", "")
        _sampling(o, self.high_noise_sample_params, "high_noise_sample_params", "high_noise_")
        tiles = self.vae_tiling_params
        if tiles is not None:
            o["vae_tiling"] = tiles.enabled
            if (tiles.tile_size_x, tiles.tile_size_y) != (0, 0):
                o["tile_size"] = (tiles.tile_size_x, tiles.tile_size_y)
            # sd-server's own default overlap (0.5) changes nothing without tiling; any other value is checked
            if tiles.target_overlap is not None and (tiles.enabled or tiles.target_overlap != 0.5):
                o["tile_overlap"] = tiles.target_overlap
        if self.cache_mode not in (None, "disabled"):
            from wanpy.cache import parse_cache_options

            pairs = [p.split("=", 1) for p in (self.cache_option or "").split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise FieldError("cache_option", f"must be NAME=VALUE[,NAME=VALUE...], got {self.cache_option!r}")
            try:
                o["cache"] = parse_cache_options(self.cache_mode, [(k.strip(), v.strip()) for k, v in pairs])
            except ValueError as exc:
                raise FieldError("cache_mode", str(exc)) from None
        elif self.cache_option:
            raise FieldError("cache_option", "needs cache_mode (a step cache mode); without one it does nothing")
        return o


def _refuse_ignored(r: SdcppVidGen) -> None:
    """What sd-server would take and then ignore, or what wanpy cannot run yet: refused by name."""
    checks: list[tuple[str, bool, str]] = [
        ("clip_skip", r.clip_skip not in (None, -1), "Wan's text encoder (umt5) has no CLIP layers to skip; "
                                                      "send -1 or leave it out"),
        ("lora", bool(r.lora), "this server applies no LoRA named by a request (a path from a request never "
                               "touches its filesystem)"),
        ("scm_mask", bool(r.scm_mask), "sd.cpp's cache masks act on UNet models, not on Wan"),
        ("scm_policy_dynamic", r.scm_policy_dynamic is False, "sd.cpp's cache masks act on UNet models, not on Wan"),
        ("output_format", r.output_format not in (None, "webm"), "this server writes WebM only"),
        ("output_compression", r.output_compression is not None, "wanpy's WebM encoder has no compression level "
                                                                 "to set here; leave it out"),
    ]
    if r.vae_tiling_params is not None:
        t = r.vae_tiling_params
        checks.append(("vae_tiling_params.rel_size_x", t.rel_size_x != 0, "relative tile sizes are not supported: "
                                                                          "give tile_size_x/y in latent pixels"))
        checks.append(("vae_tiling_params.rel_size_y", t.rel_size_y != 0, "relative tile sizes are not supported: "
                                                                          "give tile_size_x/y in latent pixels"))
    for field, refused, why in checks:
        if refused:
            raise FieldError(field, why)


def _sampling(o: dict[str, Any], p: SdcppSampleParams | None, where: str, prefix: str) -> None:
    if p is None:
        return
    ignored = [("eta", p.eta is not None, "wanpy passes no eta to its samplers"),
               ("shifted_timestep", p.shifted_timestep not in (None, 0), "applies to SDXL-style models, not Wan"),
               ("custom_sigmas", bool(p.custom_sigmas), "custom sigma schedules are not supported; pick a scheduler")]
    if prefix:
        ignored.append(("flow_shift", p.flow_shift is not None, "the high-noise expert shares sample_params.flow_shift"))
    g = p.guidance
    if g is not None:
        ignored += [("guidance.img_cfg", g.img_cfg is not None, "Wan has no image guidance; it is ignored"),
                    ("guidance.distilled_guidance", g.distilled_guidance is not None,
                     "Wan is not guidance-distilled; it is ignored"),
                    ("guidance.slg", g.slg is not None and g.slg.model_fields_set != set() and
                     (g.slg.scale not in (None, 0) or bool({"layers", "layer_start", "layer_end"} & g.slg.model_fields_set)),
                     "skip-layer guidance is not supported for Wan (send no slg, or only scale 0)")]
    for field, refused, why in ignored:
        if refused:
            raise FieldError(f"{where}.{field}", why)
    if p.sample_method is not None:
        o[f"{prefix}sample_method"] = p.sample_method
    if p.scheduler is not None:
        o[f"{prefix}scheduler"] = p.scheduler
    if p.sample_steps is not None:
        if prefix and p.sample_steps == -1:
            pass  # sd-server's "auto": split the steps at moe_boundary, wanpy's default too
        else:
            o[f"{prefix}steps"] = p.sample_steps
    if not prefix and p.flow_shift is not None:
        o["flow_shift"] = p.flow_shift
    if g is not None and g.txt_cfg is not None:
        o[f"{prefix}cfg_scale"] = g.txt_cfg


# --- where an unknown field belongs -------------------------------------------------------------
def _paths(model: type[BaseModel], prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.setdefault(name, []).append(path)
        for sub in _models_in(info.annotation):
            for key, paths in _paths(sub, f"{path}.").items():
                out.setdefault(key, []).extend(paths)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


_PATHS = {"openai": _paths(OpenAIVideoCreate), "sdcpp": _paths(SdcppVidGen)}


def misplaced_hint(schema: Literal["openai", "sdcpp"], loc: tuple[str | int, ...]) -> str:
    """For an unknown field at ``loc``: where a field of that name belongs, if anywhere."""
    name = str(loc[-1])
    here = ".".join(str(p) for p in loc)
    elsewhere = [p for p in _PATHS[schema].get(name, []) if p != here]
    if elsewhere:
        return "; it belongs " + " or ".join("at the top level" if "." not in p else f"at {p}" for p in elsewhere)
    return ""

