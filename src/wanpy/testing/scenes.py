"""Synthetic moving scenes for encoder tests and benchmarks (not noise: codecs see motion)."""

from __future__ import annotations

import numpy as np


def scene_frame(t: int, height: int, width: int, n: int = 161) -> np.ndarray:
    """Frame t of a synthetic moving scene: drifting gradients, a moving texture, a disc, a box."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    yp = np.arange(height, dtype=np.float32)[:, None]
    xp = np.arange(width, dtype=np.float32)[None, :]
    ph = np.float32(t / n)
    aspect = np.float32(height / width)
    r = 0.5 + 0.4 * np.sin(2 * np.pi * (x + ph))
    g = 0.5 + 0.4 * np.cos(2 * np.pi * (0.8 * y - ph))
    b = 0.3 + 0.4 * x * y + 0.2 * ph
    img = np.stack(np.broadcast_arrays(r, g, b), axis=-1)
    tex = 0.5 + 0.5 * np.sin(2 * np.pi * (xp - 0.3 * width * ph) / 16) * np.sin(2 * np.pi * yp / 12)
    band = ((y > 0.7) & (y < 0.9)).astype(np.float32)[..., None]
    tint = np.array([0.9, 0.8, 0.5], np.float32)
    img = img * (1 - 0.6 * band) + 0.6 * band * tex[..., None] * tint

    def soft(dist: np.ndarray) -> np.ndarray:  # 1.5-pixel anti-aliased edge
        return np.clip(0.5 - dist * width / 1.5, 0, 1)[..., None]

    cx, cy = 0.2 + 0.6 * ph, 0.45 + 0.2 * np.sin(2 * np.pi * ph)
    disc = soft(np.sqrt((x - cx) ** 2 + ((y - cy) * aspect) ** 2) - 0.12)
    img = img * (1 - disc) + disc * np.array([0.95, 0.25, 0.1], np.float32)
    box = soft(np.maximum(np.abs(x - (0.8 - 0.6 * ph)) - 0.05, np.abs(y - 0.2) * aspect - 0.06))
    img = img * (1 - box) + box * np.array([0.1, 0.3, 0.9], np.float32)
    frame: np.ndarray = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return frame
