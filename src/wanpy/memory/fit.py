"""``fit="auto"``: ``choose_fit`` picks the cheapest settings under which a request fits.

The size and the frame count are never changed; settings already on stay on. What was
chosen is a ``FitChoice``; when nothing fits, the refusal carries the frames and sizes that
would (``wanpy.memory.suggest``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from wanpy.cache import StepCache
from wanpy.memory.check import build_report, prepare
from wanpy.memory.report import Preflight, refusal
from wanpy.memory.search import FIT_SETTINGS, choose
from wanpy.system import Device

logger = logging.getLogger("wanpy")

__all__ = ["FIT_MODES", "FIT_SETTINGS", "FitChoice", "FitMode", "choose_fit"]

FitMode = Literal["strict", "auto"]
FIT_MODES: tuple[FitMode, ...] = ("strict", "auto")  # refuse what does not fit, or choose settings that do

PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class FitChoice:
    """What ``fit="auto"`` chose (``wanpy.choose_fit``).

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


def choose_fit(model: PathArg, *, width: int, height: int, num_frames: int,
               flash_attention: bool = False, vae_tiling: bool = False, offload_to_cpu: bool = False,
               keep_vae_on_cpu: bool = False, tile_size: tuple[int, int] | None = None,
               tile_overlap: float = 0.5, text_encoder: PathArg | None = None,
               vae: PathArg | None = None,
               high_noise_diffusion_model: PathArg | None = None,
               clip_vision: PathArg | None = None, device: Device | int | None = None,
               max_allocation: int | str | None = None, total_memory: int | str | None = None,
               init_image: bool = False, end_image: bool = False, preview: str | None = None,
               vae_conv_direct: bool = False, tiny_vae: PathArg | None = None,
               tiny_vae_use: str = "decode", max_vram: int | str | None = None,
               cache: StepCache | str | None = None, cfg_scale: float | None = None,
               high_noise_cfg_scale: float | None = None) -> FitChoice:
    """The cheapest settings under which the request fits (what ``fit="auto"`` uses).

    Takes ``preflight``'s arguments. Settings already on stay on; size and frames are never
    changed. Raises ``AllocationTooLargeError`` (with the pre-flight's suggestions, which
    include the frames and sizes that would fit) when no setting set fits.
    """
    started = time.perf_counter()
    p = prepare(
        model, width=width, height=height, num_frames=num_frames, flash_attention=flash_attention,
        vae_tiling=vae_tiling, text_encoder=text_encoder, vae=vae, high_noise=high_noise_diffusion_model,
        offload_to_cpu=offload_to_cpu, keep_vae_on_cpu=keep_vae_on_cpu, device=device,
        max_allocation=max_allocation, total_memory=total_memory, clip_vision=clip_vision,
        init_image=init_image, end_image=end_image, tile_size=tile_size, tile_overlap=tile_overlap,
        tiling_may_follow=True, preview=preview, vae_conv_direct=vae_conv_direct, tiny_vae=tiny_vae,
        tiny_vae_use=tiny_vae_use, max_vram=max_vram, cache=cache, cfg_scale=cfg_scale,
        high_noise_cfg_scale=high_noise_cfg_scale)
    search = choose(p.session, p.config, p.target)
    if search.chosen is None:
        raise refusal(build_report(p, p.config, started, suggest=True))
    c = search.chosen
    report = build_report(p, c, started, suggest=False)
    settings = {n: getattr(c, n) for n in FIT_SETTINGS}
    changed = {n: (getattr(p.config, n), v) for n, v in settings.items() if getattr(p.config, n) != v}
    logger.info("fit='auto': %s (%d setting sets measured)",
                ", ".join(f"{n}={v[1]}" for n, v in changed.items()) or "fits as asked", search.tried)
    return FitChoice(settings, changed, report, search.tried)
