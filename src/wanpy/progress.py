"""Progress of a generation: phases, per-step callbacks, tqdm bars, sd.cpp's timings.

sd.cpp reports progress as (step, steps, seconds per step) without saying which phase
it is in; its log says when a phase ends. ``GenerationMonitor`` follows both and
turns them into ``Progress`` events and ``Timings``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wanpy.video import Timings

PHASES = ("loading", "lora_loading", "high_noise_sampling", "sampling", "vae_decode")

# sd.cpp reads LoRA files (at run time, once per model they may modify, two passes each)
# with progress reports of their own, before text encoding.
_LORA_START = re.compile(r"^apply lora (at runtime|immediately)|^loading LoRA from ")
_LORA_END = re.compile(r"^apply_loras completed, taking ([\d.]+)s")
# one per sampling pass (extern/patches/0005): the model evaluations run and served by the step cache
_EVALUATIONS = re.compile(r"wanpy: model evaluations: (\d+) computed, (\d+) from the step cache")


@dataclass(frozen=True)
class Progress:
    """One progress event: ``step`` of ``steps`` in ``phase``, ``elapsed`` seconds into it.
    ``preview``: with ``preview=`` asked, the step's preview frames, uint8 (T, H, W, 3) (the
    latent frames at latent resolution for "proj", decoded frames for "vae"); None between
    previews."""

    phase: str
    step: int
    steps: int
    elapsed: float
    seconds_per_step: float
    preview: np.ndarray | None = field(default=None, repr=False)


# sd.cpp's log lines that close a phase, and which timing they give (value in s or ms).
_TIMING_LINES = (
    (re.compile(r"get_learned_condition completed, taking ([\d.]+)s"), "text_encoding", 1.0),
    (re.compile(r"encode_first_stage completed, taking ([\d.]+) ms"), "image_encoding", 1e-3),
    (re.compile(r"get_clip_vision_output completed, taking ([\d.]+) ms"), "image_encoding", 1e-3),
    (re.compile(r"sampling\(high noise\) completed, taking ([\d.]+)s"), "high_noise_sampling", 1.0),
    (re.compile(r"^sampling completed, taking ([\d.]+)s"), "sampling", 1.0),
    (re.compile(r"decode_first_stage completed, taking ([\d.]+)s"), "vae_decode", 1.0),
)


class GenerationMonitor:
    """Routes sd.cpp's progress to a callback and tqdm bars; collects timings."""

    def __init__(self, *, first_phase: str, callback: Callable[[Progress], Any] | None, bars: bool,
                 stop: threading.Event | None = None) -> None:
        self.phase = first_phase
        self.stop = stop
        self.callback = callback
        self.bars = bars
        self._bar: Any = None
        self._phase_start = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.steps_seen: dict[str, int] = {}
        self.evaluations: dict[str, tuple[int, int]] = {}  # sampling phase -> (computed, from the cache)
        self._after_loras = first_phase
        self._preview: tuple[int, np.ndarray] | None = None  # (step, frames) not yet delivered

    # called by _core's progress trampoline (GIL held); False cancels
    def on_progress(self, step: int, steps: int, seconds_per_step: float) -> bool:
        if self.stop is not None and self.stop.is_set():
            return False
        if step <= 0:
            if step == 0 and self.bars and steps > 0:  # sd.cpp announces a sampling pass before its first step
                self._update_bar(0, steps)  # the bar's clock starts with the pass, not after its first step
            return True
        self.steps_seen[self.phase] = step
        if self.bars:
            self._update_bar(step, steps)
        if self.callback is not None:
            preview = None
            if self._preview is not None and self._preview[0] == step:
                preview, self._preview = self._preview[1], None
            event = Progress(self.phase, step, steps, time.perf_counter() - self._phase_start, seconds_per_step,
                             preview)
            answer = self.callback(event)
            if isinstance(answer, (bool, np.bool_)) and not answer:  # numpy's False cancels too
                return False
        return True

    # called by _core's preview trampoline (GIL held), before the same step's progress
    def on_preview(self, step: int, frames: np.ndarray, is_noisy: bool) -> None:
        self._preview = (step, frames)

    # called for every sd.cpp log line
    def on_log(self, text: str) -> None:
        m = _EVALUATIONS.search(text)
        if m:
            self.evaluations[self.phase] = (int(m.group(1)), int(m.group(2)))
            return
        if _LORA_START.search(text):
            if self.phase != "lora_loading":
                self._after_loras = self.phase
                self._next_phase("lora_loading")
            return
        m = _LORA_END.search(text)
        if m:
            self.timings["lora_loading"] = self.timings.get("lora_loading", 0.0) + float(m.group(1))
            if self.phase == "lora_loading":
                self._next_phase(self._after_loras)
            return
        for pattern, key, scale in _TIMING_LINES:
            m = pattern.search(text)
            if m:
                self.timings[key] = self.timings.get(key, 0.0) + float(m.group(1)) * scale
                if key == "high_noise_sampling":
                    self._next_phase("sampling")
                elif key == "sampling":
                    self._next_phase("vae_decode")
                    if self.bars:  # an untiled decode reports no steps: one step, the whole decode
                        self._update_bar(0, 1)
                elif key == "vae_decode" and self._bar is not None:
                    self._bar.update(self._bar.total - self._bar.n)
                    self._close_bar()

    def _next_phase(self, phase: str) -> None:
        self._close_bar()
        self.phase = phase
        self._phase_start = time.perf_counter()

    def _update_bar(self, step: int, steps: int) -> None:
        if self._bar is None or self._bar.total != steps:
            self._close_bar()
            self._bar = _tqdm()(total=steps, desc=self.phase.replace("_", " "), unit="step", leave=True)
        self._bar.update(step - self._bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self._close_bar()

    def result(self, *, load: float | None, total: float) -> Timings:
        t = self.timings
        return Timings(load=load, lora_loading=t.get("lora_loading"), text_encoding=t.get("text_encoding"), image_encoding=t.get("image_encoding"),
                       high_noise_sampling=t.get("high_noise_sampling"), sampling=t.get("sampling"),
                       vae_decode=t.get("vae_decode"), total=total)


class LoadingBar:
    """A "loading" bar from sd.cpp's progress while it reads the weights (tensors read of all)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    # called by _core's progress trampoline (GIL held) while the context loads
    def on_progress(self, step: int, steps: int, seconds: float) -> bool:
        if self.enabled and steps > 0:
            if self._bar is None or self._bar.total != steps:
                self.close()
                self._bar = _tqdm()(total=steps, desc="loading", unit="tensor", leave=True)
            self._bar.update(max(0, step - self._bar.n))
        return True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _tqdm() -> Any:
    """tqdm's class, imported when the first bar is drawn (not by ``import wanpy``)."""
    from tqdm.auto import tqdm

    return tqdm
