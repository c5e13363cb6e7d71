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

The modules: ``report`` (the result types and the refusal), ``presets`` (models by name),
``target`` (the device), ``session`` (files and presets as one measuring session),
``measure`` (one configuration), ``search`` and ``fit`` (``fit="auto"``), ``suggest``
(what would fit instead), ``check`` (``preflight`` itself).
"""

from __future__ import annotations

from wanpy.memory.check import preflight
from wanpy.memory.fit import FIT_MODES, FIT_SETTINGS, FitChoice, choose_fit
from wanpy.memory.measure import host_video_bytes
from wanpy.memory.presets import PRESETS
from wanpy.memory.report import Allocation, PhaseTotal, Preflight, refusal

__all__ = ["FIT_MODES", "FIT_SETTINGS", "PRESETS", "Allocation", "FitChoice", "PhaseTotal", "Preflight",
           "choose_fit", "host_video_bytes", "preflight", "refusal"]
