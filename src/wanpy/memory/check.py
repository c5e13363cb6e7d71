"""``wanpy.preflight``: what a generation will allocate, and whether it fits, before loading.

The request is validated as a pipeline would (sizes, frame counts, flags), the measuring
session opened for its files or presets, the target device resolved, and the report built:
allocations, phase totals, the verdict and, when it does not fit, what would.
"""

from __future__ import annotations

import dataclasses

import os
import time
from dataclasses import dataclass
from typing import Any

from wanpy.cache import StepCache, check_cache
from wanpy.catalogue import DITS
from wanpy.memory.measure import Config, evaluate
from wanpy.memory.report import Preflight
from wanpy.memory.session import session, sources
from wanpy.memory.suggest import suggest as suggestions_for
from wanpy.memory.target import Target, target
from wanpy.system import Device
from wanpy.units import format_bytes
from wanpy.validation import (
    check_float, check_max_vram, check_num_frames, check_preview, check_size, check_tiles, check_tiny_vae_use,
)

__all__ = ["Prepared", "build_report", "check_flags", "prepare", "preflight"]

PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class Prepared:
    """A validated request, ready to measure: the measuring ``session``, the configuration,
    the target device, the model's label and the size multiple its DiT needs."""

    session: Any
    config: Config
    target: Target
    label: str
    multiple: int


def preflight(model: PathArg, *, width: int, height: int, num_frames: int,
              flash_attention: bool = False, vae_tiling: bool = False,
              text_encoder: PathArg | None = None, vae: PathArg | None = None,
              high_noise_diffusion_model: PathArg | None = None, offload_to_cpu: bool = False,
              keep_vae_on_cpu: bool = False, device: Device | int | None = None,
              max_allocation: int | str | None = None, total_memory: int | str | None = None,
              clip_vision: PathArg | None = None, init_image: bool = False,
              end_image: bool = False, tile_size: tuple[int, int] | None = None, tile_overlap: float = 0.5,
              preview: str | None = None, suggest: bool = True, weights_only: bool = False,
              vae_conv_direct: bool = False, tiny_vae: PathArg | None = None,
              tiny_vae_use: str = "decode", max_vram: int | str | None = None,
              cache: StepCache | str | None = None, cfg_scale: float | None = None,
              high_noise_cfg_scale: float | None = None) -> Preflight:
    """What a generation will allocate, and whether it fits, before loading anything.

    Args:
        model: a Wan DiT file (GGUF or safetensors; only its header is read) or a preset:
            ``wan2.1-t2v-1.3b``, ``wan2.2-ti2v-5b``, ``wan2.x-t2v-14b`` (= ``wan2.1-t2v-14b``),
            ``wan2.1-i2v-14b``, ``wan2.1-flf2v-14b``, ``wan2.2-t2v-a14b``, ``wan2.2-i2v-a14b``,
            ``wan2.1-vace-1.3b``, ``wan2.1-vace-14b``, ``wan2.2-vace-fun-a14b``, optionally with a weight dtype: ``wan2.x-t2v-14b:q4_k`` (default f16).
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
        preview: the generation's preview mode: "vae" (and "tae") decodes inside each previewed
            sampling step, so that phase holds the DiT's and the decoder's compute buffers at once.
        vae_conv_direct: as for ``WanPipeline`` (the VAE's graphs with direct convolutions).
        tiny_vae, tiny_vae_use: as for ``WanPipeline``: a TAEHV file that encodes and decodes
            instead of the VAE ("decode") or decodes the previews only ("preview").
        max_vram: as for ``WanPipeline`` (with ``offload_to_cpu=True``): the DiT's, the text
            encoder's and CLIP vision's graphs are planned into segments by sd.cpp's own planner;
            a budget below the largest segment does not fit.
        cache: the generation's step cache (``wanpy.StepCache`` or a mode name): the copies of the
            latent it keeps while sampling (``StepCache.host_copies``) are host memory (on a CPU
            device, the memory it samples from).
        cfg_scale, high_noise_cfg_scale: the generation's cfgs (with ``cache``): 1 caches one
            evaluation a step, any other value two (cond and uncond); sd.cpp runs Wan2.2 A14B's
            high-noise pass guided only when both are not 1. None: the family's default (never 1).
        suggest: compute ``suggestions`` (alternatives re-measured to fit).
        weights_only: only the weights and the load phase (what a pipeline checks before
            loading; the size arguments are then only used for validation).

    Returns:
        ``wanpy.Preflight``; ``str(report)`` is a table.
    """
    started = time.perf_counter()
    check_flags(suggest=suggest)
    p = prepare(
        model, width=width, height=height, num_frames=num_frames, flash_attention=flash_attention,
        vae_tiling=vae_tiling, text_encoder=text_encoder, vae=vae, high_noise=high_noise_diffusion_model,
        offload_to_cpu=offload_to_cpu, keep_vae_on_cpu=keep_vae_on_cpu, device=device,
        max_allocation=max_allocation, total_memory=total_memory, clip_vision=clip_vision,
        init_image=init_image, end_image=end_image, tile_size=tile_size, tile_overlap=tile_overlap,
        preview=preview, vae_conv_direct=vae_conv_direct, tiny_vae=tiny_vae, tiny_vae_use=tiny_vae_use,
        max_vram=max_vram, cache=cache, cfg_scale=cfg_scale, high_noise_cfg_scale=high_noise_cfg_scale)
    return build_report(p, p.config, started, suggest=suggest, weights_only=weights_only)


def check_flags(**flags: Any) -> None:
    """TypeError for any flag that is not a bool."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")


def prepare(model: PathArg, *, width: int, height: int, num_frames: int, flash_attention: bool,
            vae_tiling: bool, text_encoder: PathArg | None, vae: PathArg | None, high_noise: PathArg | None,
            offload_to_cpu: bool, keep_vae_on_cpu: bool, device: Device | int | None,
            max_allocation: int | str | None, total_memory: int | str | None, clip_vision: PathArg | None,
            init_image: bool, end_image: bool, tile_size: tuple[int, int] | None,
            tile_overlap: float, tiling_may_follow: bool = False, preview: str | None = None,
            vae_conv_direct: bool = False, tiny_vae: PathArg | None = None,
            tiny_vae_use: str = "decode", max_vram: int | str | None = None,
            cache: StepCache | str | None = None, cfg_scale: float | None = None,
            high_noise_cfg_scale: float | None = None) -> Prepared:
    """The validated request, its measuring session and its target device."""
    check_flags(flash_attention=flash_attention, vae_tiling=vae_tiling, offload_to_cpu=offload_to_cpu,
                keep_vae_on_cpu=keep_vae_on_cpu, init_image=init_image, end_image=end_image,
                vae_conv_direct=vae_conv_direct)
    use = check_tiny_vae_use(tiny_vae_use)
    step_cache = check_cache(cache)
    if cfg_scale is not None:
        cfg_scale = check_float("cfg_scale", cfg_scale, minimum=0, maximum=100)
    if high_noise_cfg_scale is not None:
        high_noise_cfg_scale = check_float("high_noise_cfg_scale", high_noise_cfg_scale, minimum=0, maximum=100)
    # sd.cpp encodes the uncond only when cfg != 1, and guides the high-noise pass only if its cfg != 1 too
    conditions = 2 if cfg_scale != 1 else 1
    high_noise_conditions = 2 if cfg_scale != 1 and high_noise_cfg_scale != 1 else 1
    if tiny_vae is None and (use == "preview" or preview == "tae"):
        raise ValueError("tiny_vae_use='preview' and preview='tae' need tiny_vae=PATH (a TAEHV file)")
    src = sources(model, vae=vae, text_encoder=text_encoder, high_noise=high_noise, clip_vision=clip_vision,
                  tiny_vae=tiny_vae)
    s = session(src)
    dit = DITS[s.dit_desc(False)]
    num_frames = check_num_frames(num_frames, maximum=dit.longest_clip)
    width, height = check_size(width, height, dit.size_multiple, dit.sdcpp_name)
    tile_size, tile_overlap = check_tiles(tile_size, tile_overlap, vae_tiling=vae_tiling, width=width, height=height,
                                          spatial_scale=dit.vae.spatial_scale, tiling_may_follow=tiling_may_follow)
    cfg = Config(width, height, num_frames, flash_attention, vae_tiling, offload_to_cpu, keep_vae_on_cpu,
                 init_image, end_image, tile_size, tile_overlap, check_preview(preview) in ("vae", "tae"),
                 vae_conv_direct, None if tiny_vae is None else use)
    t = target(device, max_allocation, total_memory)
    cfg = dataclasses.replace(cfg, max_vram=check_max_vram(max_vram, offload_to_cpu=offload_to_cpu, is_cpu=t.is_cpu),
                              cache_copies=0 if step_cache is None else step_cache.host_copies(conditions),
                              high_noise_cache_copies=(0 if step_cache is None
                                                       else step_cache.host_copies(high_noise_conditions)))
    return Prepared(s, cfg, t, src.label, dit.size_multiple)


def build_report(p: Prepared, cfg: Config, started: float, *, suggest: bool,
                 weights_only: bool = False) -> Preflight:
    """The report of ``cfg`` (``p.config`` or settings chosen for it) on ``p``'s target."""
    t = p.target
    e = evaluate(p.session, cfg, t, weights_only)
    suggestions: tuple[str, ...] = ()
    if suggest and not e.fits and not weights_only:
        host_bound = any(a.kind == "host buffer" for a in e.allocations)
        suggestions = suggestions_for(p.session, cfg, t, p.multiple, host_bound)
    if suggest and e.fits and t.max_allocation is not None:
        headroom = t.max_allocation - e.largest.nbytes
        suggestions = (f"largest allocation leaves {format_bytes(headroom)} below the ceiling",)
    params = {"width": cfg.width, "height": cfg.height, "num_frames": cfg.num_frames,
              "flash_attention": cfg.flash_attention, "vae_tiling": cfg.vae_tiling,
              "vae_conv_direct": cfg.vae_conv_direct,
              "offload_to_cpu": cfg.offload_to_cpu, "keep_vae_on_cpu": cfg.keep_vae_on_cpu,
              "init_image": cfg.init_image, "end_image": cfg.end_image, "tile_size": cfg.tile_size,
              "tile_overlap": cfg.tile_overlap, "max_vram": cfg.max_vram, "cache_copies": cfg.cache_copies,
              "high_noise_cache_copies": cfg.high_noise_cache_copies,
              "max_vram_floor_component": e.max_vram_floor_component, "model": p.label, "alignment": t.alignment,
              "buffer_max_size": t.buffer_max_size}
    return Preflight(e.fits, e.largest, t.max_allocation, t.total_memory, e.allocations, e.phases, e.peak,
                     suggestions, e.problems, f"{e.desc} ({p.label})", t.name, params,
                     time.perf_counter() - started, e.max_vram_floor)
