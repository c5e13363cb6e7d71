"""``WanPipeline`` and ``generate_video``: the calls users make.

Everything is validated in Python before any native call; the models load once and
generate many times; one generation runs at a time per process (sd.cpp's callbacks
and buffers are process-global), others wait for it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from wanpy import _core, _logging
from wanpy.errors import Cancelled, GenerationError, LoadError, ModelFileError
from wanpy.families import DEFAULT_SAMPLE_METHOD, DEFAULT_SCHEDULER, FAMILIES, Family
from wanpy.loras import check_lora_file
from wanpy.progress import GenerationMonitor, Progress
from wanpy.preflight import FIT_MODES, FitChoice, Preflight, choose_fit, refusal
from wanpy.preflight import preflight as run_preflight
from wanpy.system import Device, backend_warnings, devices
from wanpy.validation import (
    MAX_NUM_FRAMES, MAX_NUM_FRAMES_BY_FAMILY, Align, check_file, check_float, check_fps, check_int, check_num_frames,
    check_parse_stack, check_seed, check_size, check_text, frames_for_duration, load_image,
)
from wanpy.video import Video
from wanpy.video_io import check_output

logger = logging.getLogger("wanpy")

# sd.cpp's state (callbacks, static buffers, rand()) is process-global.
_NATIVE_LOCK = threading.Lock()
_native_owner: int | None = None  # the thread inside sd.cpp, while one is


@contextmanager
def _native() -> Iterator[None]:
    """_NATIVE_LOCK, refusing the thread that already holds it: a progress callback or log
    handler calling wanpy again would otherwise wait for itself forever."""
    global _native_owner
    if _native_owner == threading.get_ident():
        raise GenerationError("wanpy cannot be called from its own progress callback or log handler while it "
                              "generates or loads in this thread: return from the callback first")
    with _NATIVE_LOCK:
        _native_owner = threading.get_ident()
        try:
            yield
        finally:
            _native_owner = None


class BackendFallbackWarning(RuntimeWarning):
    """A GPU build found no GPU: this pipeline would run on the CPU."""


@dataclass(frozen=True)
class Lora:
    """A LoRA file applied at ``multiplier``; ``high_noise`` targets the Wan2.2 high-noise expert."""

    path: str
    multiplier: float = 1.0
    high_noise: bool = False


def _identify(path: str, slot: str) -> Any:
    from wanpy.model_files import identify_file

    try:
        return identify_file(path)
    except ModelFileError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{slot}: cannot read {path!r}: {exc}", path=path) from exc


def _family_of(path: str, *, two_experts: bool, slot: str = "diffusion_model") -> Family:
    kind = _identify(path, slot)
    if kind.kind != "dit":
        raise ModelFileError(f"{slot}: {path!r} is not a Wan diffusion model (it reads as: {kind})", path=path)
    if kind.problems:
        raise ModelFileError(f"{slot}: {path!r} cannot run in sd.cpp: {'; '.join(kind.problems)}", path=path)
    candidates = [FAMILIES[f] for f in kind.families if f in FAMILIES] or (
        [FAMILIES[kind.family]] if kind.family in FAMILIES else [])
    for fam in candidates:
        if fam.needs_high_noise == two_experts:
            return fam
    known = ", ".join(f.name for f in candidates) or "none wanpy knows"
    if two_experts:
        raise ValueError(f"{slot}: {path!r} is {known}: a single-expert model, but a high-noise expert was given")
    raise ModelFileError(f"{slot}: {path!r} is {known}: not a Wan family wanpy runs "
                         f"({', '.join(FAMILIES)})", path=path)


def _resolve_device(device: Device | int | None, devs: list[Device]) -> Device:
    if device is None:
        gpus = [d for d in devs if d.type in ("gpu", "igpu", "accel")]
        return gpus[0] if gpus else next(d for d in devs if d.type == "cpu")
    if isinstance(device, Device):
        device = device.index
    index = check_int("device", device, minimum=0)
    for d in devs:
        if d.index == index:
            if d.type == "cpu" and any(g.backend.lower() != "cpu" for g in devs):
                # sd.cpp 0.4.7 always takes a GPU when ggml has one; saying otherwise would be a lie
                raise ValueError(f"device {index} is the CPU, but this {_core.BACKEND} build runs sd.cpp on its "
                                 "GPU whenever one is visible; to run on the CPU, hide the GPUs before importing "
                                 "wanpy (e.g. GGML_VK_VISIBLE_DEVICES='') or use a CPU build")
            return d
    raise ValueError(f"device {index} does not exist; devices: {', '.join(f'{d.index} {d.name}' for d in devs)}")


class WanPipeline:
    """Wan2.1 / Wan2.2 models loaded once, generating many videos.

    Args:
        diffusion_model: the Wan DiT (GGUF or safetensors). For Wan2.2 A14B, the
            low-noise expert.
        vae: the Wan VAE (2.1 for all but TI2V-5B, which takes the 2.2 VAE).
        text_encoder: umt5-xxl; None runs the DiT with an empty (zero) text context.
        high_noise_diffusion_model: Wan2.2 A14B's high-noise expert.
        clip_vision: CLIP ViT-H, for Wan2.1 I2V / FLF2V.
        flash_attention: use ggml's flash attention (less memory for attention).
        vae_tiling: decode the VAE in spatial tiles (bounded memory).
        offload_to_cpu: keep weights in RAM and move them to the device when used.
        keep_vae_on_cpu: run the VAE on the CPU.
        n_threads: CPU threads (default: physical cores).
        device: a ``wanpy.Device`` or its index (default: the first GPU, else the CPU).
    """

    _free_params_immediately = False  # True in the one-shot function's _OneShotPipeline

    def __init__(self, diffusion_model: str | os.PathLike[str], vae: str | os.PathLike[str],
                 text_encoder: str | os.PathLike[str] | None = None,
                 high_noise_diffusion_model: str | os.PathLike[str] | None = None,
                 clip_vision: str | os.PathLike[str] | None = None, *, flash_attention: bool = False,
                 vae_tiling: bool = False, offload_to_cpu: bool = False, keep_vae_on_cpu: bool = False,
                 n_threads: int | None = None, device: Device | int | None = None,
                 preflight: bool = True) -> None:
        self._ctx: Any = None
        self.files = {
            "diffusion_model": check_file("diffusion_model", diffusion_model),
            "vae": check_file("vae", vae),
            "text_encoder": None if text_encoder is None else check_file("text_encoder", text_encoder),
            "high_noise_diffusion_model": None if high_noise_diffusion_model is None
            else check_file("high_noise_diffusion_model", high_noise_diffusion_model),
            "clip_vision": None if clip_vision is None else check_file("clip_vision", clip_vision),
        }
        for name, flag in (("flash_attention", flash_attention), ("vae_tiling", vae_tiling),
                           ("offload_to_cpu", offload_to_cpu), ("keep_vae_on_cpu", keep_vae_on_cpu)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        two_experts = self.files["high_noise_diffusion_model"] is not None
        self.family = _family_of(self.files["diffusion_model"], two_experts=two_experts)
        self._check_components()
        self.flash_attention = flash_attention
        self.vae_tiling = vae_tiling
        self.offload_to_cpu = offload_to_cpu
        self.keep_vae_on_cpu = keep_vae_on_cpu
        self.n_threads = _core.num_physical_cores() if n_threads is None else check_int(
            "n_threads", n_threads, minimum=1, maximum=1024)
        devs = devices()  # on Vulkan each enumeration creates an instance: once per pipeline
        self.device = _resolve_device(device, devs)
        for message in backend_warnings(_core.BACKEND, devs):
            warnings.warn(message, BackendFallbackWarning, stacklevel=2)
        if not isinstance(preflight, bool):
            raise TypeError(f"preflight must be True or False, got {preflight!r}")
        self.preflight = preflight
        if preflight:
            # weights that cannot be allocated are refused before any is read: sd.cpp
            # ignores a failed weight allocation and then writes into unallocated memory
            self._preflight(self.family.width, self.family.height, 1, weights_only=True)

        self._load_timed()

    def _measure_args(self) -> dict[str, Any]:
        """What the pre-flight needs of this pipeline: its files, memory settings and device."""
        f = self.files
        return {"model": f["diffusion_model"], "vae": f["vae"], "text_encoder": f["text_encoder"],
                "high_noise_diffusion_model": f["high_noise_diffusion_model"], "clip_vision": f["clip_vision"],
                "flash_attention": self.flash_attention, "vae_tiling": self.vae_tiling,
                "offload_to_cpu": self.offload_to_cpu, "keep_vae_on_cpu": self.keep_vae_on_cpu,
                "device": self.device}

    def _preflight(self, width: int, height: int, num_frames: int, *, weights_only: bool = False,
                   init_image: bool = False, end_image: bool = False, tile_size: tuple[int, int] | None = None,
                   tile_overlap: float = 0.5) -> Preflight:
        report = run_preflight(
            width=width, height=height, num_frames=num_frames, init_image=init_image, end_image=end_image,
            tile_size=tile_size, tile_overlap=tile_overlap, weights_only=weights_only, **self._measure_args())
        if not report.fits:
            raise refusal(report)
        logger.debug("pre-flight: fits; largest %s, peak %d B (%.0f ms)", report.largest, report.peak,
                     report.seconds * 1000)
        return report

    def _choose_fit(self, width: int, height: int, num_frames: int, *, init_image: bool, end_image: bool,
                    tile_size: tuple[int, int] | None, tile_overlap: float) -> FitChoice:
        """fit="auto": the cheapest settings that fit; reloads when a load-time setting changes."""
        choice = choose_fit(
            width=width, height=height, num_frames=num_frames, init_image=init_image, end_image=end_image,
            tile_size=tile_size, tile_overlap=tile_overlap, **self._measure_args())
        at_load = {k: v for k, (_, v) in choice.changed.items() if k in _LOAD_SETTINGS}
        if at_load:
            logger.warning("fit='auto': reloading %s with %s", self.family.name,
                           ", ".join(f"{k}={v}" for k, v in at_load.items()))
            self.close()
            for k, v in at_load.items():
                setattr(self, k, v)
            self._load_timed()
        return choice

    # --- loading -------------------------------------------------------------------
    def _check_components(self) -> None:
        f, files = self.family, self.files
        if f.needs_high_noise:
            hn = _family_of(files["high_noise_diffusion_model"], two_experts=True, slot="high_noise_diffusion_model")
            if hn.name != f.name:
                raise ValueError(f"high_noise_diffusion_model is {hn.name}, diffusion_model is {f.name}")
        if f.needs_clip_vision and files["clip_vision"] is None:
            raise ValueError(f"{f.name} needs clip_vision (CLIP ViT-H) for its image conditioning")
        vae = _identify(files["vae"], "vae")
        want = "wan2.2-vae" if f.name == "wan2.2-ti2v-5b" else "wan2.1-vae"
        if vae.kind != "vae" or vae.family != want:
            raise ModelFileError(f"vae: {files['vae']!r} reads as: {vae}; {f.name} needs the {want}",
                                 path=files["vae"])
        if vae.has_encoder is False:
            raise ModelFileError(f"vae: {files['vae']!r} has no encoder weights; sd.cpp's video mode needs the "
                                 "whole Wan VAE (encoder and decoder)", path=files["vae"])
        for slot, want_kind in (("text_encoder", "text_encoder"), ("clip_vision", "clip_vision")):
            if files[slot] is not None:
                got = _identify(files[slot], slot)
                if got.kind != want_kind or got.problems:
                    raise ModelFileError(f"{slot}: {files[slot]!r} reads as: {got}", path=files[slot])

    @contextmanager
    def _device_selected(self) -> Iterator[None]:
        """sd.cpp picks its Vulkan device from SD_VK_DEVICE when it loads."""
        if self.device.backend.lower() != "vulkan":
            yield
            return
        old = os.environ.get("SD_VK_DEVICE")
        os.environ["SD_VK_DEVICE"] = self.device.name.removeprefix("Vulkan")
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("SD_VK_DEVICE", None)
            else:
                os.environ["SD_VK_DEVICE"] = old

    def _load_timed(self) -> None:
        start = time.perf_counter()
        with _native(), self._device_selected():
            self._ctx = self._load()
        self.load_seconds = time.perf_counter() - start
        logger.info("loaded %s in %.1f s on %s", self.family.name, self.load_seconds, self.device.name)

    def _load(self) -> Any:
        f = self.files
        said: list[str] = []  # sd.cpp's errors while loading: the LoadError's reason

        def on_log(source: str, level: str, text: str) -> None:
            if level == "error" and not _logging.recovered(text) and len(said) < 20:
                said.append(text)

        try:
            with _logging.observe(on_log):
                return _core.Context(
                    diffusion_model=f["diffusion_model"], high_noise_diffusion_model=f["high_noise_diffusion_model"],
                    vae=f["vae"], t5xxl=f["text_encoder"], clip_vision=f["clip_vision"], n_threads=self.n_threads,
                    vae_decode_only=False,  # video mode needs the VAE encoder (and I2V encodes images)
                    flash_attention=self.flash_attention, offload_params_to_cpu=self.offload_to_cpu,
                    keep_vae_on_cpu=self.keep_vae_on_cpu, keep_clip_on_cpu=False, enable_mmap=False,
                    free_params_immediately=self._free_params_immediately, progress=None)
        except KeyboardInterrupt as exc:
            raise Cancelled("loading was interrupted (Ctrl-C); nothing stays loaded") from exc
        except _core.NativeError as exc:
            reason = f": sd.cpp said: {'; '.join(said)}" if said else " (sd.cpp logged no error line)"
            raise LoadError(f"{exc}{reason}", sdcpp_errors=tuple(said)) from exc

    # --- lifecycle ----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._ctx is None

    def close(self) -> None:
        """Free the weights. Idempotent; the pipeline cannot generate afterwards."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            with _native():
                ctx.close()

    def __enter__(self) -> WanPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            ctx.close()

    # --- generation ---------------------------------------------------------------
    def generate_video(
        self, prompt: str, *, negative_prompt: str = "", width: int | None = None, height: int | None = None,
        num_frames: int | None = None, duration: float | None = None, align: Align | None = None,
        fps: float | None = None, steps: int | None = None, cfg_scale: float | None = None,
        flow_shift: float | None = None, sample_method: str = DEFAULT_SAMPLE_METHOD,
        scheduler: str = DEFAULT_SCHEDULER, seed: int | None = None, init_image: Any = None,
        end_image: Any = None, continue_from: Video | None = None, strength: float = 1.0,
        moe_boundary: float | None = None, high_noise_steps: int | None = None,
        high_noise_cfg_scale: float | None = None, high_noise_sample_method: str | None = None,
        high_noise_scheduler: str | None = None, loras: Sequence[Lora | tuple] = (),
        tile_size: tuple[int, int] | None = None, tile_overlap: float = 0.5, preflight: bool = True,
        fit: str = "strict", progress: bool = True, callback: Callable[[Progress], Any] | None = None,
    ) -> Video:
        """Generate a video; returns frames uint8 (T, H, W, 3) with everything that shaped them.

        Defaults (None) are the model family's published ones (``wanpy.families``):
        e.g. Wan2.1 T2V 1.3B: 832x480, 81 frames, 16 fps, 50 steps, cfg 5.0, flow shift 5.0;
        Wan2.2 A14B: 1280x720, 81 frames, 16 fps, 40 steps, moe_boundary 0.875 (T2V).

        num_frames must be 4k+1 (or pass ``align="down"|"up"``); ``duration`` (seconds)
        with ``fps`` is an alternative. width/height must be multiples of 16 (32 for
        TI2V-5B). ``seed=None`` draws one at random; ``video.seed`` tells which.
        ``high_noise_steps=None`` splits ``steps`` between the experts at
        ``moe_boundary`` (sd.cpp's rule); an integer adds that many high-noise steps.
        ``continue_from=video`` starts from that video's last frame (I2V/TI2V/FLF2V).
        ``preflight=True`` (default) first predicts every allocation (``wanpy.preflight``)
        and raises ``wanpy.AllocationTooLargeError`` when one exceeds the device's
        per-allocation ceiling or a phase its memory; ``video.params["preflight"]``
        records the largest allocation and the peak.
        ``fit="auto"`` instead chooses the cheapest settings that fit (``wanpy.preflight.choose_fit``:
        flash attention, VAE tiling and a tile size, the VAE on the CPU, offloading; never a
        smaller size or fewer frames) and records them in ``video.params["fit"]``; a setting
        fixed at load (flash_attention, keep_vae_on_cpu, offload_to_cpu) reloads the weights
        with it, and the pipeline keeps it. ``fit="strict"`` (default) refuses instead.
        ``callback(progress)`` is called per step; returning False, raising or Ctrl-C
        stop the generation with ``wanpy.Cancelled`` (the pipeline stays usable).
        """
        t_start = time.perf_counter()
        if self._ctx is None:
            raise GenerationError("this pipeline is closed")
        fam = self.family
        prompt = check_text("prompt", prompt)
        negative_prompt = check_text("negative_prompt", negative_prompt)
        check_parse_stack(prompt, negative_prompt)
        w, h, n, fps_value = _request_shape(fam, width, height, num_frames, duration, fps, align)
        steps_v = check_int("steps", fam.steps if steps is None else steps, minimum=1, maximum=1000)
        cfg = check_float("cfg_scale", fam.cfg_scale if cfg_scale is None else cfg_scale, minimum=0, maximum=100)
        shift = check_float("flow_shift", fam.flow_shift if flow_shift is None else flow_shift,
                            minimum=0, exclusive_minimum=True, maximum=1000)
        methods, schedulers = _core.sample_methods(), _core.schedulers()
        for label, value, allowed in (("sample_method", sample_method, methods),
                                      ("scheduler", scheduler, schedulers)):
            if value not in allowed:
                raise ValueError(f"{label} {value!r} is not one of: {', '.join(allowed)}")
        _check_schedule("scheduler", scheduler, steps_v)
        seed_v = check_seed(seed)
        if seed_v is None:
            seed_v = secrets.randbelow(2**31)
        strength_v = check_float("strength", strength, minimum=0, exclusive_minimum=True, maximum=1)
        if strength_v != 1.0:
            # sd.cpp 0.4.7's generate_video never reads sd_vid_gen_params.strength: every video
            # is denoised from pure noise, so any other value would be silently ignored
            raise ValueError(f"strength={strength_v} is not supported: the pinned sd.cpp's video generation always "
                             "denoises fully (strength 1.0) and would ignore it")

        # images
        if continue_from is not None:
            if not isinstance(continue_from, Video):
                raise TypeError(f"continue_from must be a wanpy.Video, got {type(continue_from).__name__}")
            if init_image is not None:
                raise TypeError("pass init_image or continue_from, not both")
            init_image = continue_from.frames[-1]
        init = None if init_image is None else load_image("init_image", init_image)
        end = None if end_image is None else load_image("end_image", end_image)
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

        # experts
        if fam.needs_high_noise:
            boundary = check_float("moe_boundary", fam.moe_boundary if moe_boundary is None else moe_boundary,
                                   minimum=0, exclusive_minimum=True, maximum=1, exclusive_maximum=True)
            hn_steps = -1 if high_noise_steps is None else check_int("high_noise_steps", high_noise_steps,
                                                                      minimum=1, maximum=1000)
            hn_cfg = check_float("high_noise_cfg_scale",
                                 fam.high_noise_cfg_scale if high_noise_cfg_scale is None else high_noise_cfg_scale,
                                 minimum=0, maximum=100)
        else:
            given = {k: v for k, v in (("moe_boundary", moe_boundary), ("high_noise_steps", high_noise_steps),
                                       ("high_noise_cfg_scale", high_noise_cfg_scale),
                                       ("high_noise_sample_method", high_noise_sample_method),
                                       ("high_noise_scheduler", high_noise_scheduler)) if v is not None}
            if given:
                raise ValueError(f"{', '.join(given)} only apply to Wan2.2 A14B; {fam.name} has one expert")
            boundary, hn_steps, hn_cfg = fam.moe_boundary, 0, cfg
        hn_method = high_noise_sample_method or sample_method
        hn_sched = high_noise_scheduler or scheduler
        for label, value, allowed in (("high_noise_sample_method", hn_method, methods),
                                      ("high_noise_scheduler", hn_sched, schedulers)):
            if value not in allowed:
                raise ValueError(f"{label} {value!r} is not one of: {', '.join(allowed)}")
        if fam.needs_high_noise:
            _check_schedule("high_noise_scheduler", hn_sched, hn_steps if hn_steps > 0 else steps_v)

        lora_list = [_check_lora(i, l, self.family, self.files) for i, l in enumerate(loras)]
        if tile_size is None:
            tile_x = tile_y = 0
        else:
            if len(tile_size) != 2:
                raise ValueError(f"tile_size must be (x, y) in latent pixels, got {tile_size!r}")
            tile_x = check_int("tile_size[0]", tile_size[0], minimum=1)
            tile_y = check_int("tile_size[1]", tile_size[1], minimum=1)
        overlap = check_float("tile_overlap", tile_overlap, minimum=0, maximum=1, exclusive_maximum=True)

        params: dict[str, Any] = {
            "family": fam.name, "prompt": prompt, "negative_prompt": negative_prompt, "width": w, "height": h,
            "num_frames": n, "fps": fps_value, "steps": steps_v, "cfg_scale": cfg, "flow_shift": shift,
            "sample_method": sample_method, "scheduler": scheduler, "seed": seed_v, "strength": strength_v,
            "init_image": None if init is None else ("continue_from" if continue_from is not None else "given"),
            "end_image": None if end is None else "given", "loras": [vars(l) for l in lora_list],
            "flash_attention": self.flash_attention, "vae_tiling": self.vae_tiling,
            "tile_size": None if tile_size is None else (tile_x, tile_y), "tile_overlap": overlap,
            "offload_to_cpu": self.offload_to_cpu, "keep_vae_on_cpu": self.keep_vae_on_cpu,
            "n_threads": self.n_threads, "device": self.device.name, "backend": _core.BACKEND,
            "model_files": dict(self.files),
        }
        if duration is not None:
            params["duration"] = duration
        if align is not None and (num_frames is not None and n != num_frames or duration is not None):
            params["aligned_from"] = num_frames if num_frames is not None else duration
        if fam.needs_high_noise:
            params.update(moe_boundary=boundary, high_noise_steps="auto" if hn_steps < 0 else hn_steps,
                          high_noise_cfg_scale=hn_cfg, high_noise_sample_method=hn_method,
                          high_noise_scheduler=hn_sched)
        if not isinstance(preflight, bool):
            raise TypeError(f"preflight must be True or False, got {preflight!r}")
        if fit not in FIT_MODES:
            raise ValueError(f"fit must be one of {', '.join(map(repr, FIT_MODES))}, got {fit!r}")
        if fit == "auto" and not preflight:
            raise ValueError("fit='auto' chooses settings from the pre-flight: it cannot run with preflight=False")
        vae_tiling = self.vae_tiling
        params["fit"] = fit
        if fit == "auto":
            choice = self._choose_fit(w, h, n, init_image=init is not None, end_image=end is not None,
                                      tile_size=None if tile_size is None else (tile_x, tile_y), tile_overlap=overlap)
            vae_tiling = choice.settings["vae_tiling"]
            if choice.settings["tile_size"] is not None:
                tile_x, tile_y = choice.settings["tile_size"]
            params.update({k: v for k, v in choice.settings.items() if k != "tile_size"},
                          tile_size=choice.settings["tile_size"], fit=choice.as_params())
            report = choice.report
        if preflight:
            if fit == "strict":
                report = self._preflight(w, h, n, init_image=init is not None, end_image=end is not None,
                                         tile_size=None if tile_size is None else (tile_x, tile_y),
                                         tile_overlap=overlap)
            params["preflight"] = {"fits": True, "largest": report.largest.name,
                                   "largest_bytes": report.largest.nbytes, "peak_bytes": report.peak,
                                   "max_allocation": report.max_allocation, "total_memory": report.total_memory}
        else:
            params["preflight"] = "skipped (preflight=False)"

        monitor = GenerationMonitor(first_phase="high_noise_sampling" if fam.needs_high_noise else "sampling",
                                    callback=callback, bars=bool(progress))

        def on_log(source: str, level: str, text: str) -> None:
            monitor.on_log(text)

        with _native():
            if self._ctx is None:
                raise GenerationError("this pipeline was closed while waiting to generate")
            try:
                with _logging.observe(on_log):
                    frames = _core.generate_video(
                        self._ctx, prompt=prompt, negative_prompt=negative_prompt, width=w, height=h,
                        num_frames=n, steps=steps_v, cfg_scale=cfg, flow_shift=shift,
                        sample_method=sample_method, scheduler=scheduler, seed=seed_v, strength=strength_v,
                        init_image=init, end_image=end, high_noise_steps=hn_steps,
                        high_noise_cfg_scale=hn_cfg, high_noise_sample_method=hn_method,
                        high_noise_scheduler=hn_sched, moe_boundary=boundary,
                        loras=[(l.path, l.multiplier, l.high_noise) for l in lora_list],
                        vae_tiling=vae_tiling, tile_size_x=tile_x, tile_size_y=tile_y,
                        tile_overlap=overlap, progress=monitor.on_progress)
            except KeyboardInterrupt as exc:
                raise Cancelled("generation interrupted (Ctrl-C)") from exc
            except _core.Cancelled as exc:
                raise Cancelled("generation cancelled by the callback") from exc
            except _core.NativeError as exc:
                raise GenerationError(str(exc)) from exc
            finally:
                monitor.close()

        # the post-condition the users' 1-frame WebMs lacked
        if frames.shape != (n, h, w, 3):
            raise GenerationError(f"sd.cpp returned {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}, "
                                  f"asked {n} frames of {w}x{h}: refusing to return a wrong video")
        if fam.needs_high_noise:
            params["high_noise_steps_run"] = monitor.steps_seen.get("high_noise_sampling", 0)
        timings = monitor.result(load=None, total=time.perf_counter() - t_start)
        return Video(frames=frames, fps=fps_value, seed=seed_v, params=params, timings=timings)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"loaded on {self.device.name}"
        return f"<WanPipeline {self.family.name} {state}>"


def _check_lora(i: int, lora: Lora | tuple, family: Family, files: dict[str, str | None]) -> Lora:
    """loras[i] as a Lora, its file checked against the pipeline's files (wanpy.loras)."""
    if isinstance(lora, tuple):
        if not 1 <= len(lora) <= 3:
            raise ValueError(f"loras[{i}] must be (path[, multiplier[, high_noise]]), got {lora!r}")
        lora = Lora(*lora)
    if not isinstance(lora, Lora):
        raise TypeError(f"loras[{i}] must be a wanpy.Lora or a tuple, got {type(lora).__name__}")
    path = check_file(f"loras[{i}]", lora.path)
    mult = check_float(f"loras[{i}].multiplier", lora.multiplier, minimum=-10, maximum=10)
    if not isinstance(lora.high_noise, bool):
        raise TypeError(f"loras[{i}].high_noise must be True or False")
    if lora.high_noise and not family.needs_high_noise:
        raise ValueError(f"loras[{i}] targets the high-noise expert, which {family.name} does not have")
    check_lora_file(f"loras[{i}]", path, high_noise=lora.high_noise, model_files=files)
    return Lora(path, mult, lora.high_noise)


class _OneShotPipeline(WanPipeline):
    """The one-shot function's pipeline: sd.cpp frees each model's weights as soon as the
    generation is done with it (the text encoder after encoding, the DiT after sampling),
    as sd-cli does, so the VAE decodes without them in memory. It generates once."""

    _free_params_immediately = True

    def generate_video(self, prompt: str, **kwargs: Any) -> Video:  # type: ignore[override]
        try:
            return super().generate_video(prompt, **kwargs)
        finally:
            self.close()  # weights are (partly) freed: never generate with this context again


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


def _request_shape(fam: Family, width: int | None, height: int | None, num_frames: int | None,
                   duration: float | None, fps: float | None, align: Align | None) -> tuple[int, int, int, float]:
    """Validated (width, height, num_frames, fps), the family's defaults for None."""
    fps_value = check_fps(fam.fps if fps is None else fps, maximum=240)
    if num_frames is not None and duration is not None:
        raise TypeError("pass num_frames or duration, not both")
    longest = MAX_NUM_FRAMES_BY_FAMILY.get(fam.name, MAX_NUM_FRAMES)
    if duration is not None:
        n = frames_for_duration(duration, fps_value, align=align, maximum=longest)
    else:
        n = check_num_frames(fam.num_frames if num_frames is None else num_frames, align=align, maximum=longest)
    w, h = check_size(fam.width if width is None else width, fam.height if height is None else height,
                      fam.size_multiple, fam.name)
    return w, h, n, fps_value


def _fit_before_loading(files: dict[str, Any], fam: Family, settings: dict[str, Any],
                        device: Device | int | None, generation: dict[str, Any]) -> FitChoice:
    """One-shot fit="auto": choose before the weights are loaded, so they load once."""
    g = generation.get
    w, h, n, _ = _request_shape(fam, g("width"), g("height"), g("num_frames"), g("duration"), g("fps"), g("align"))
    tile = g("tile_size")
    return choose_fit(files["diffusion_model"], width=w, height=h, num_frames=n, tile_size=None if tile is None
                      else tuple(tile), tile_overlap=g("tile_overlap", 0.5), device=device,
                      init_image=g("init_image") is not None or g("continue_from") is not None,
                      end_image=g("end_image") is not None, **settings,
                      **{k: v for k, v in files.items() if k != "diffusion_model"})


_LOAD_SETTINGS = ("flash_attention", "keep_vae_on_cpu", "offload_to_cpu")


def generate_video(prompt: str, *, diffusion_model: str | os.PathLike[str], vae: str | os.PathLike[str],
                   text_encoder: str | os.PathLike[str] | None = None,
                   high_noise_diffusion_model: str | os.PathLike[str] | None = None,
                   clip_vision: str | os.PathLike[str] | None = None, flash_attention: bool = False,
                   vae_tiling: bool = False, offload_to_cpu: bool = False, keep_vae_on_cpu: bool = False,
                   n_threads: int | None = None, device: Device | int | None = None,
                   output: str | os.PathLike[str] | None = None, **generation: Any) -> Video:
    """One-shot: load, generate, free; optionally write ``output`` (.webm/.mp4/.gif).

    Takes every argument of :class:`WanPipeline` and of :meth:`WanPipeline.generate_video`
    (unknown names raise TypeError there).
    """
    # an unknown or misplaced argument fails now, not after the weights are loaded
    inspect.signature(WanPipeline.generate_video).bind(None, prompt, **generation)
    if output is not None:
        check_output(output)  # a missing or unwritable place fails now, not after the generation
    files = {"vae": vae, "text_encoder": text_encoder, "high_noise_diffusion_model": high_noise_diffusion_model,
             "clip_vision": clip_vision}
    settings = {"flash_attention": flash_attention, "vae_tiling": vae_tiling, "offload_to_cpu": offload_to_cpu,
                "keep_vae_on_cpu": keep_vae_on_cpu}
    # what can fail before the weights are loaded fails now: the prompt, LoRAs, fit="auto"'s choice
    check_parse_stack(check_text("prompt", prompt), check_text("negative_prompt", generation.get("negative_prompt", "")))
    named = {"diffusion_model": check_file("diffusion_model", diffusion_model),
             **{k: None if v is None else check_file(k, v) for k, v in files.items()}}
    fam = _family_of(named["diffusion_model"], two_experts=named["high_noise_diffusion_model"] is not None)
    loras = generation.get("loras", ())
    if loras and isinstance(loras, Sequence) and not isinstance(loras, str):
        for i, lora in enumerate(loras):
            _check_lora(i, lora, fam, named)
    choice = None
    if generation.get("fit") == "auto" and generation.get("preflight", True) is True:
        choice = _fit_before_loading(named, fam, settings, device, generation)
        settings.update({k: v for k, v in choice.settings.items() if k in settings})
        # the pipeline gets the chosen settings: its own pre-flight confirms them, no second search
        generation = {**generation, "fit": "strict", "tile_size": choice.settings["tile_size"]}
    with _OneShotPipeline(diffusion_model, vae, text_encoder, high_noise_diffusion_model, clip_vision, **settings,
                          n_threads=n_threads, device=device, preflight=generation.get("preflight", True)) as pipe:
        video = pipe.generate_video(prompt, **generation)
        video = dataclasses.replace(video, timings=dataclasses.replace(video.timings, load=pipe.load_seconds))
    if choice is not None:
        video.params["fit"] = choice.as_params()  # what changed from this call's arguments
    if output is not None:
        video.save(Path(output))
    return video
