"""``GenerationRequest``: one generation's every value, validated before any weight is loaded.

``build_request(family, prompt, **options)`` is a pure function of a Wan family (from the
catalogue, or identified from model files' headers) and the user's options: it applies the
family's published defaults, checks every value and raises ``ValueError``/``TypeError``
naming the option and the valid values, and loads no weight. ``WanPipeline.generate_video``,
the one-shot ``wanpy.generate_video`` and the CLI all build one first; ``Video.request``
keeps it, and ``request.to_dict()`` is its JSON-serialisable record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np

from wanpy import _core
from wanpy.cache import StepCache, check_cache
from wanpy.catalogue import DEFAULT_SAMPLE_METHOD, DEFAULT_SCHEDULER, FAMILIES, WanFamily
from wanpy.catalogue import family as find_family
from wanpy.memory.fit import FIT_MODES, FitMode
from wanpy.validation import (
    MAX_TILE_OVERLAP, Align, check_bool, check_file, check_float, check_fps, check_int, check_num_frames,
    check_preview, check_seed, check_size, check_text, check_tiles, frames_for_duration, load_image, load_video,
)

if TYPE_CHECKING:
    from wanpy.video import Video

__all__ = ["GenerationRequest", "HighNoise", "Lora", "RequestOptions", "build_request",
           "check_loras", "check_options"]

MAX_FPS = 240


@dataclass(frozen=True)
class Lora:
    """A LoRA file applied at ``multiplier``; ``high_noise`` targets the Wan2.2 high-noise expert."""

    path: str
    multiplier: float = 1.0
    high_noise: bool = False


@dataclass(frozen=True)
class HighNoise:
    """Wan2.2 A14B's high-noise expert: ``steps`` None splits the steps at ``moe_boundary``
    (sd.cpp's rule); an integer adds that many high-noise steps."""

    moe_boundary: float
    steps: int | None
    cfg_scale: float
    sample_method: str
    scheduler: str


class RequestOptions(TypedDict, total=False):
    """The options of a generation (every one optional; None or absent: the family's published
    default). ``num_frames`` must be 4k+1 (or pass ``align``); ``duration`` (seconds) at ``fps``
    is an alternative. ``width``/``height``: multiples of the family's size multiple.
    ``continue_from``: start from a video's last frame. ``high_noise_*`` and ``moe_boundary``:
    Wan2.2 A14B only. ``tile_size`` (latent pixels) needs ``vae_tiling``. ``fit="auto"``:
    the cheapest memory settings that fit; ``preflight=False`` skips the memory check.
    ``preview`` ("proj": the latents projected to RGB, at latent resolution; "vae": decoded,
    at full resolution; "tae": decoded by the pipeline's ``tiny_vae``) delivers ``Progress.preview``
    frames to the callback every ``preview_every`` steps (of the denoised latents; ``preview_noisy``: the noisy ones).
    ``interpolate``: a higher fps the video is brought to by motion-compensated frame
    interpolation after decoding (``Video.interpolate``). ``cache``: a step cache
    (``wanpy.StepCache`` or a mode name: "easycache", "dbcache", "taylorseer", "cache-dit",
    "spectrum") that replaces model evaluations; ``Video.cached_evaluations`` says how many.
    ``control_video`` (Wan VACE only): the frames that steer the video (pose, depth, edges, a video
    to restyle), a ``Video``, a uint8 (T, H, W, 3) array or a video file, with exactly
    ``num_frames`` frames of ``width`` x ``height``; ``vace_strength`` scales its effect (sd.cpp's
    default 1.0); ``reference_image`` (VACE): an image whose subject or style the video takes."""

    negative_prompt: str
    width: int | None
    height: int | None
    num_frames: int | None
    duration: float | None
    align: Align | None
    fps: float | Fraction | None
    steps: int | None
    cfg_scale: float | None
    flow_shift: float | None
    sample_method: str
    scheduler: str
    seed: int | None
    init_image: Any
    end_image: Any
    continue_from: Video | None
    strength: float
    moe_boundary: float | None
    high_noise_steps: int | None
    high_noise_cfg_scale: float | None
    high_noise_sample_method: str | None
    high_noise_scheduler: str | None
    loras: Sequence[Lora | tuple[str] | tuple[str, float] | tuple[str, float, bool]]
    vae_tiling: bool
    tile_size: tuple[int, int] | None
    tile_overlap: float
    preflight: bool
    fit: FitMode
    preview: Literal["proj", "vae", "tae"] | None
    preview_every: int
    preview_noisy: bool
    interpolate: float | Fraction | None
    cache: StepCache | str | None
    control_video: Any
    vace_strength: float | None
    reference_image: Any


OPTION_NAMES = frozenset(RequestOptions.__optional_keys__)
# pipeline settings fixed when the weights load: a misplaced one is named as such
LOAD_SETTINGS = frozenset({"flash_attention", "offload_to_cpu", "keep_vae_on_cpu", "n_threads", "device",
                           "diffusion_model", "vae", "text_encoder", "high_noise_diffusion_model",
                           "clip_vision", "mmap", "vae_conv_direct", "diffusion_conv_direct", "tiny_vae",
                           "tiny_vae_use", "max_vram"})


def check_options(options: Mapping[str, Any], where: str) -> None:
    """An unknown or misplaced option is a TypeError naming it (never ignored)."""
    for name in options:
        if name in OPTION_NAMES:
            continue
        if name in LOAD_SETTINGS:
            raise TypeError(f"{where}() got {name!r}, a setting fixed when the weights load: pass it to "
                            "WanPipeline(...) (or to the one-shot wanpy.generate_video)")
        raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


@dataclass(frozen=True)
class GenerationRequest:
    """Every value of one generation, resolved and validated (see ``build_request``).

    ``seed`` None draws one when generating (``Video.seed`` and ``Video.request`` say which).
    ``init_image``/``end_image`` are HxWx3 uint8 arrays; ``init_image_source`` says where the
    first came from ("given" or "continue_from"). ``high_noise`` is set for Wan2.2 A14B only.
    ``duration`` and ``aligned_from`` record what was asked when it is not ``num_frames``."""

    family: WanFamily
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: Fraction
    steps: int
    cfg_scale: float
    flow_shift: float
    sample_method: str
    scheduler: str
    seed: int | None
    loras: tuple[Lora, ...] = ()
    high_noise: HighNoise | None = None
    vae_tiling: bool = False
    tile_size: tuple[int, int] | None = None
    tile_overlap: float = MAX_TILE_OVERLAP
    preflight: bool = True
    fit: FitMode = "strict"
    init_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    end_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    init_image_source: str | None = None
    duration: float | None = None
    aligned_from: int | float | None = None
    preview: str | None = None
    preview_every: int = 1
    preview_noisy: bool = False
    interpolate: Fraction | None = None
    cache: StepCache | None = None
    control_video: np.ndarray | None = field(default=None, repr=False, compare=False)
    control_video_source: str | None = None
    vace_strength: float | None = None
    reference_image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record: fps as a string ("16", "30000/1001"), images as their
        source and shape, the family by name."""
        out: dict[str, Any] = {
            "family": self.family.name, "prompt": self.prompt, "negative_prompt": self.negative_prompt,
            "width": self.width, "height": self.height, "num_frames": self.num_frames, "fps": str(self.fps),
            "steps": self.steps, "cfg_scale": self.cfg_scale, "flow_shift": self.flow_shift,
            "sample_method": self.sample_method, "scheduler": self.scheduler, "seed": self.seed,
            "init_image": self.init_image_source, "end_image": None if self.end_image is None else "given",
            "loras": [dataclasses.asdict(lora) for lora in self.loras],
            "vae_tiling": self.vae_tiling, "tile_size": self.tile_size, "tile_overlap": self.tile_overlap,
            "preflight": self.preflight, "fit": self.fit, "preview": self.preview,
            "cache": None if self.cache is None else self.cache.to_dict(),
        }
        if self.preview is not None:
            out.update(preview_every=self.preview_every, preview_noisy=self.preview_noisy)
        if self.interpolate is not None:
            out["interpolate"] = str(self.interpolate)
        if self.family.vace:
            out.update(control_video=self.control_video_source, vace_strength=self.vace_strength,
                       reference_image=None if self.reference_image is None else "given")
        if self.high_noise is not None:
            hn = self.high_noise
            out.update(moe_boundary=hn.moe_boundary, high_noise_steps="auto" if hn.steps is None else hn.steps,
                       high_noise_cfg_scale=hn.cfg_scale, high_noise_sample_method=hn.sample_method,
                       high_noise_scheduler=hn.scheduler)
        if self.duration is not None:
            out["duration"] = self.duration
        if self.aligned_from is not None:
            out["aligned_from"] = self.aligned_from
        return out

    def __str__(self) -> str:
        return (f"{self.family.name}: {self.width}x{self.height}, {self.num_frames} frames at {self.fps} fps, "
                f"{self.steps} steps, cfg {self.cfg_scale}, seed {self.seed if self.seed is not None else 'random'}")


def build_request(family: str | WanFamily, prompt: str, *,
                  model_files: Mapping[str, str | None] | None = None, **options: Any) -> GenerationRequest:
    """Resolve and validate one generation's options for ``family``; loads no weight.

    ``model_files`` (component -> path, as ``WanPipeline.files``), when given, lets LoRAs be
    checked against the models they must modify (``wanpy.loras``). Raises ``TypeError`` for an
    unknown option or a value of the wrong type and ``ValueError`` (naming the option and the
    valid values) for a value sd.cpp would change or cannot run.
    """
    check_options(options, "build_request")
    fam = find_family(family)
    o = options.get
    shape = _shape(fam, o("width"), o("height"), o("num_frames"), o("duration"), o("fps"), o("align"))
    prompt = check_text("prompt", prompt)
    negative_prompt = check_text("negative_prompt", o("negative_prompt", ""))
    d = fam.defaults
    steps = check_int("steps", _given(o("steps"), d.steps), minimum=1, maximum=1000)
    cfg = check_float("cfg_scale", _given(o("cfg_scale"), d.cfg_scale), minimum=0, maximum=100)
    shift = check_float("flow_shift", _given(o("flow_shift"), d.flow_shift), minimum=0, exclusive_minimum=True,
                        maximum=1000)
    sample_method = _check_choice("sample_method", o("sample_method", DEFAULT_SAMPLE_METHOD), _core.sample_methods())
    scheduler = _check_choice("scheduler", o("scheduler", DEFAULT_SCHEDULER), _core.schedulers())
    _check_schedule("scheduler", scheduler, steps)
    _check_strength(o("strength", 1.0))
    init, source, end = _images(fam, shape[0], shape[1], o("init_image"), o("end_image"), o("continue_from"))
    preflight = check_bool("preflight", o("preflight", True))
    fit = o("fit", "strict")
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {', '.join(map(repr, FIT_MODES))}, got {fit!r}")
    vae_tiling = check_bool("vae_tiling", o("vae_tiling", False))
    tile_size, overlap = check_tiles(o("tile_size"), o("tile_overlap", MAX_TILE_OVERLAP), vae_tiling=vae_tiling,
                                     width=shape[0], height=shape[1], spatial_scale=fam.vae.spatial_scale,
                                     tiling_may_follow=fit == "auto")
    if o("tile_overlap") is not None and not vae_tiling and fit != "auto":
        raise ValueError(f"tile_overlap={overlap} needs vae_tiling=True (without tiling sd.cpp would ignore it)")
    if fit == "auto" and not preflight:
        raise ValueError("fit='auto' chooses settings from the pre-flight: it cannot run with preflight=False")
    preview, preview_every, preview_noisy = _previews(options, steps)
    control, control_source, vace_strength, reference = _vace(fam, options, *shape[:3])
    return GenerationRequest(
        control_video=control, control_video_source=control_source, vace_strength=vace_strength,
        reference_image=reference,
        interpolate=_interpolate(o("interpolate"), shape[3], shape[2]), preview=preview, preview_every=preview_every,
        preview_noisy=preview_noisy, cache=check_cache(o("cache")), family=fam, prompt=prompt,
        negative_prompt=negative_prompt, width=shape[0], height=shape[1],
        num_frames=shape[2], fps=shape[3], steps=steps, cfg_scale=cfg, flow_shift=shift,
        sample_method=sample_method, scheduler=scheduler, seed=check_seed(o("seed")),
        loras=check_loras(o("loras", ()), fam, model_files), high_noise=_high_noise(fam, options, steps, sample_method,
                                                                                scheduler),
        vae_tiling=vae_tiling, tile_size=tile_size, tile_overlap=overlap, preflight=preflight, fit=fit,
        init_image=init, end_image=end, init_image_source=source, duration=o("duration"),
        aligned_from=_aligned_from(o("align"), o("num_frames"), o("duration"), shape[2]))


def _previews(options: Mapping[str, Any], steps: int) -> tuple[str | None, int, bool]:
    preview = check_preview(options.get("preview"))
    if preview is None:
        given = [k for k in ("preview_every", "preview_noisy") if options.get(k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need preview='proj', 'vae' or 'tae' (without a preview mode they do "
                             "nothing)")
        return None, 1, False
    every = check_int("preview_every", options.get("preview_every", 1), minimum=1, maximum=steps)
    return preview, every, check_bool("preview_noisy", options.get("preview_noisy", False))


_VACE_OPTIONS = ("control_video", "vace_strength", "reference_image")


def _vace(fam: WanFamily, options: Mapping[str, Any], width: int, height: int,
          num_frames: int) -> tuple[np.ndarray | None, str | None, float | None, np.ndarray | None]:
    """A VACE request's control video (and where it came from), strength and reference image."""
    o = options.get
    if not fam.vace:
        given = [k for k in _VACE_OPTIONS if o(k) is not None]
        if given:
            vace = ", ".join(f.name for f in FAMILIES.values() if f.vace)
            raise ValueError(f"{', '.join(given)}: Wan VACE models only ({vace}); {fam.name} takes no control video")
        return None, None, None, None
    strength = check_float("vace_strength", _given(o("vace_strength"), 1.0), minimum=0, maximum=10)
    control, source = (None, None) if o("control_video") is None else load_video(
        "control_video", o("control_video"), num_frames=num_frames, width=width, height=height)
    reference = None if o("reference_image") is None else load_image("reference_image", o("reference_image"))
    if reference is not None and reference.shape[:2] != (height, width):
        raise ValueError(f"reference_image is {reference.shape[1]}x{reference.shape[0]} but the video is "
                         f"{width}x{height}: resize it first (wanpy does not resize silently)")
    return control, source, strength, reference


def _interpolate(new_fps: Any, fps: Fraction, num_frames: int) -> Fraction | None:
    if new_fps is None:
        return None
    target = check_fps(new_fps, maximum=1000)
    if target <= fps:
        raise ValueError(f"interpolate={new_fps} must be above the video's {fps} fps (interpolation adds frames)")
    if num_frames < 2:
        raise ValueError("interpolate needs at least 2 frames to interpolate between; num_frames is 1")
    return target


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _shape(fam: WanFamily, width: Any, height: Any, num_frames: Any, duration: Any, fps: Any,
           align: Any) -> tuple[int, int, int, Fraction]:
    """Validated (width, height, num_frames, fps), the family's defaults for None."""
    if align is not None and align not in ("down", "up"):
        raise ValueError(f"align must be 'down', 'up' or None, got {align!r}")
    fps_value = check_fps(_given(fps, fam.defaults.fps), maximum=MAX_FPS)
    if num_frames is not None and duration is not None:
        raise TypeError("pass num_frames or duration, not both")
    longest = fam.longest_clip
    if duration is not None:
        n = frames_for_duration(duration, fps_value, align=align, maximum=longest)
    else:
        n = check_num_frames(_given(num_frames, fam.defaults.num_frames), align=align, maximum=longest)
    w, h = check_size(_given(width, fam.defaults.width), _given(height, fam.defaults.height), fam.size_multiple,
                      fam.name)
    return w, h, n, fps_value


def _aligned_from(align: Any, num_frames: Any, duration: Any, n: int) -> int | float | None:
    if align is None:
        return None
    if duration is not None:
        return float(duration)
    return int(num_frames) if num_frames is not None and int(num_frames) != n else None


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of: {', '.join(allowed)}")
    return value


def _check_schedule(label: str, scheduler: str, steps: int) -> None:
    """Schedules sd.cpp cannot build for a Wan model or for so few steps."""
    if scheduler == "ays":
        raise ValueError(f"{label} 'ays' has no schedule for Wan models in sd.cpp (it would return one flat "
                         "colour): use 'discrete' (the default) or another scheduler")
    if scheduler == "gits" and steps < 2:
        raise ValueError(f"{label} 'gits' needs at least 2 steps (sd.cpp reads out of bounds with {steps})")
    if scheduler in ("karras", "exponential") and steps < 2:
        raise ValueError(f"{label} {scheduler!r} needs at least 2 steps: its schedule divides by steps - 1 "
                         f"(NaN with {steps})")


def _check_strength(strength: Any) -> None:
    value = check_float("strength", strength, minimum=0, exclusive_minimum=True, maximum=1)
    if value != 1.0:
        # sd.cpp 0.4.7's generate_video never reads sd_vid_gen_params.strength: every video
        # is denoised from pure noise, so any other value would be silently ignored
        raise ValueError(f"strength={value} is not supported: the pinned sd.cpp's video generation always "
                         "denoises fully (strength 1.0) and would ignore it")


def _images(fam: WanFamily, w: int, h: int, init_image: Any, end_image: Any,
            continue_from: Any) -> tuple[np.ndarray | None, str | None, np.ndarray | None]:
    from wanpy.video import Video

    source = None
    if continue_from is not None:
        if not isinstance(continue_from, Video):
            raise TypeError(f"continue_from must be a wanpy.Video, got {type(continue_from).__name__}")
        if init_image is not None:
            raise TypeError("pass init_image or continue_from, not both")
        if continue_from.num_frames == 0:
            raise ValueError("continue_from: the video has no frames to continue from")
        init_image, source = continue_from.frames[-1], "continue_from"
    init = None if init_image is None else load_image("init_image", init_image)
    if init is not None and source is None:
        source = "given"
    end = None if end_image is None else load_image("end_image", end_image)
    if fam.vace and (init is not None or end is not None):
        raise ValueError(f"{fam.name} takes no init_image/end_image/continue_from: a VACE model is steered by "
                         "control_video, and takes an image as reference_image")
    if fam.images == "none" and (init is not None or end is not None):
        raise ValueError(f"{fam.name} is text-to-video: it takes no init_image/end_image/continue_from")
    if fam.images in ("optional", "init") and end is not None:
        raise ValueError(f"{fam.name} takes no end_image (first-last-frame needs Wan2.1 FLF2V)")
    if fam.images in ("init", "init_end") and init is None:
        raise ValueError(f"{fam.name} needs init_image (or continue_from)")
    if fam.images == "init_end" and end is None:
        raise ValueError(f"{fam.name} needs end_image")
    for label, img in (("init_image", init), ("end_image", end)):
        if img is not None and img.shape[:2] != (h, w):
            raise ValueError(f"{label} is {img.shape[1]}x{img.shape[0]} but the video is {w}x{h}: "
                             "resize it first (wanpy does not resize silently)")
    return init, source, end


def check_loras(loras: Any, fam: WanFamily, model_files: Mapping[str, str | None] | None) -> tuple[Lora, ...]:
    """``loras`` as Lora records, each file checked (against the model files when given)."""
    if isinstance(loras, (str, bytes, Lora)) or not isinstance(loras, Sequence):
        raise TypeError(f"loras must be a list of wanpy.Lora or (path, multiplier[, high_noise]) tuples, "
                        f"got {type(loras).__name__}")
    return tuple(_lora(i, lora, fam, model_files) for i, lora in enumerate(loras))


def _lora(i: int, lora: Any, fam: WanFamily, model_files: Mapping[str, str | None] | None) -> Lora:
    """loras[i] as a Lora, its file checked against the model files when they are known."""
    if isinstance(lora, tuple):
        if not 1 <= len(lora) <= 3:
            raise ValueError(f"loras[{i}] must be (path[, multiplier[, high_noise]]), got {lora!r}")
        lora = Lora(*lora)
    if not isinstance(lora, Lora):
        raise TypeError(f"loras[{i}] must be a wanpy.Lora or a tuple, got {type(lora).__name__}")
    path = check_file(f"loras[{i}]", lora.path)
    mult = check_float(f"loras[{i}].multiplier", lora.multiplier, minimum=-10, maximum=10)
    high_noise = check_bool(f"loras[{i}].high_noise", lora.high_noise)
    if high_noise and not fam.two_experts:
        raise ValueError(f"loras[{i}] targets the high-noise expert, which {fam.name} does not have")
    if model_files is not None:
        from wanpy.loras import check_lora_file

        check_lora_file(f"loras[{i}]", path, high_noise=high_noise, model_files=dict(model_files))
    return Lora(path, mult, high_noise)


_HIGH_NOISE_OPTIONS = ("moe_boundary", "high_noise_steps", "high_noise_cfg_scale", "high_noise_sample_method",
                       "high_noise_scheduler")


def _high_noise(fam: WanFamily, options: Mapping[str, Any], steps: int, sample_method: str,
                scheduler: str) -> HighNoise | None:
    o = options.get
    if not fam.two_experts:
        given = [k for k in _HIGH_NOISE_OPTIONS if o(k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to Wan2.2 A14B; {fam.name} has one expert")
        return None
    d = fam.defaults
    boundary = check_float("moe_boundary", _given(o("moe_boundary"), d.moe_boundary), minimum=0,
                           exclusive_minimum=True, maximum=1, exclusive_maximum=True)
    hn_steps = None if o("high_noise_steps") is None else check_int("high_noise_steps", o("high_noise_steps"),
                                                                     minimum=1, maximum=1000)
    hn_cfg = check_float("high_noise_cfg_scale", _given(o("high_noise_cfg_scale"), d.high_noise_cfg_scale),
                         minimum=0, maximum=100)
    methods, schedulers = _core.sample_methods(), _core.schedulers()
    hn_method = _check_choice("high_noise_sample_method", _given(o("high_noise_sample_method"), sample_method),
                              methods)
    hn_sched = _check_choice("high_noise_scheduler", _given(o("high_noise_scheduler"), scheduler), schedulers)
    _check_schedule("high_noise_scheduler", hn_sched, steps if hn_steps is None else hn_steps)
    return HighNoise(boundary, hn_steps, hn_cfg, hn_method, hn_sched)

