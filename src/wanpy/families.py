"""The Wan model families wanpy drives, with their published defaults.

Each family knows how it is recognised (the kind ``wanpy.model_files.identify``
reports), which images it takes, the size multiple sd.cpp needs, and the defaults
of the published reference configurations (Wan2.1 / Wan2.2 ``generate.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ImageMode = Literal["none", "optional", "init", "init_end"]


@dataclass(frozen=True)
class Family:
    """Defaults and constraints of one Wan model family."""

    name: str
    images: ImageMode  # which of init_image / end_image it takes
    size_multiple: int  # width and height must be multiples of this
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    cfg_scale: float
    flow_shift: float
    needs_high_noise: bool = False  # Wan2.2 A14B: a high-noise and a low-noise expert
    high_noise_cfg_scale: float | None = None
    moe_boundary: float = 0.875
    needs_clip_vision: bool = False


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("wan2.1-t2v-1.3b", "none", 16, 832, 480, 81, 16, 50, 5.0, 5.0),
        Family("wan2.1-t2v-14b", "none", 16, 1280, 720, 81, 16, 50, 5.0, 5.0),
        Family("wan2.1-i2v-14b", "init", 16, 832, 480, 81, 16, 40, 5.0, 3.0, needs_clip_vision=True),
        Family("wan2.1-flf2v-14b", "init_end", 16, 1280, 720, 81, 16, 50, 5.0, 16.0, needs_clip_vision=True),
        Family("wan2.2-ti2v-5b", "optional", 32, 1280, 704, 121, 24, 50, 5.0, 5.0),
        Family("wan2.2-t2v-a14b", "none", 16, 1280, 720, 81, 16, 40, 3.0, 12.0,
               needs_high_noise=True, high_noise_cfg_scale=4.0, moe_boundary=0.875),
        Family("wan2.2-i2v-a14b", "init", 16, 1280, 720, 81, 16, 40, 3.5, 5.0,
               needs_high_noise=True, high_noise_cfg_scale=3.5, moe_boundary=0.900),
    )
}

# The sampler every published Wan configuration uses (flow matching, Euler).
DEFAULT_SAMPLE_METHOD = "euler"
DEFAULT_SCHEDULER = "discrete"  # sd.cpp's own default for Euler on flow models


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown Wan model family {name!r}; known: {', '.join(FAMILIES)}") from None
