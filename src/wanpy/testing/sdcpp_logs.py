"""The buffer sizes sd.cpp logs, read back from its log lines (``wanpy._logging.observe``), so
that tests and benchmarks compare the pre-flight's predictions with what sd.cpp really allocated."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["compute_buffers", "params_buffers"]

MiB = 1024**2
_COMPUTE = re.compile(r"(\S+) compute buffer size: ([\d.]+) MB")
_PARAMS = re.compile(r"(\S+) params backend buffer size =\s*([\d.]+) MB")


def compute_buffers(lines: Iterable[str]) -> list[tuple[str, float]]:
    """sd.cpp's "<runner> compute buffer size: X MB" lines as (runner, bytes), in order (one per
    VAE tile when tiling: repeats of the same buffer are counted once). sd.cpp rounds to 0.01 MB."""
    out: list[tuple[str, float]] = []
    for line in lines:
        m = _COMPUTE.search(line)
        if m and (not out or out[-1] != (m.group(1), float(m.group(2)) * MiB)):
            out.append((m.group(1), float(m.group(2)) * MiB))
    return out


def params_buffers(lines: Iterable[str]) -> dict[str, float]:
    """sd.cpp's "<runner> params backend buffer size = X MB" lines: the weights each runner holds."""
    out: dict[str, float] = {}
    for line in lines:
        m = _PARAMS.search(line)
        if m:
            out[m.group(1)] = float(m.group(2)) * MiB
    return out
