"""The pre-flight's report: every allocation, the phases' totals, what does not fit and why.

``Preflight`` is what ``wanpy.preflight`` returns; ``refusal`` turns one that does not fit
into the ``AllocationTooLargeError`` a pipeline raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wanpy import system
from wanpy.errors import AllocationTooLargeError
from wanpy.units import format_bytes

__all__ = ["Allocation", "PhaseTotal", "Preflight", "refusal"]


@dataclass(frozen=True)
class Allocation:
    """One allocation ggml will make: ``name`` (what it is), ``phase`` (when: "load",
    "text encoding", "clip vision", "VAE encode (reference image)" (VACE), "VAE encode",
    "high-noise sampling", "sampling", "VAE decode"), ``nbytes``. ``component`` is the model part; ``kind`` is
    "weights buffer", "weight tensor", "compute buffer", "tensor", "host buffer" (the
    decoded video, when host memory is what does not fit) or "cache copies" (what a step cache
    keeps in host memory while sampling); ``shape`` (ggml
    order) and ``dtype`` describe a single tensor; ``buffer_total`` is the whole buffer
    the chunk or tensor belongs to (ggml splits buffers at the device's buffer size)."""

    name: str
    phase: str
    nbytes: int
    component: str = ""
    kind: str = ""
    shape: tuple[int, ...] = ()
    dtype: str = ""
    buffer_total: int = 0
    on_device: bool = True  # False: in host memory (a VAE kept on the CPU), no device ceiling

    def __str__(self) -> str:
        return f"{self.name} ({self.phase}): {format_bytes(self.nbytes)}"


@dataclass(frozen=True)
class PhaseTotal:
    """Device memory in use during one phase: resident weights + the phase's buffers.
    ``host`` is what the phase keeps in RAM instead (offloaded weights, a VAE kept on the CPU)."""

    phase: str
    device: int
    host: int = 0


@dataclass(frozen=True)
class Preflight:
    """The pre-flight report (see ``wanpy.preflight``). ``fits`` is True when every
    allocation is within ``max_allocation`` (None: no per-allocation ceiling) and every
    phase within ``total_memory`` (None: not checked). ``problems`` says what does not fit.
    ``max_vram_floor``: with a ``max_vram`` budget, the smallest budget under which sd.cpp can plan
    every segmented graph (its largest segment's need, by sd.cpp's own measure); None without one."""

    fits: bool
    largest: Allocation
    max_allocation: int | None
    total_memory: int | None
    allocations: tuple[Allocation, ...]
    phases: tuple[PhaseTotal, ...]
    peak: int
    suggestions: tuple[str, ...]
    problems: tuple[str, ...]
    model: str
    device: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    max_vram_floor: int | None = None

    def _repr_html_(self) -> str:
        from wanpy.display import preflight_html

        return preflight_html(self)

    def __str__(self) -> str:
        p = self.params
        ceiling = format_bytes(self.max_allocation) if self.max_allocation else "none"
        memory = format_bytes(self.total_memory) if self.total_memory else "not checked"
        lines = [
            f"pre-flight: {self.model}, {p['width']}x{p['height']}, {p['num_frames']} frames, "
            f"flash_attention={p['flash_attention']}, vae_tiling={p['vae_tiling']}",
            f"device: {self.device}; per-allocation ceiling {ceiling}; memory {memory}",
            "",
            f"{'allocation':<58} {'phase':<20} {'size':>11}  fits",
        ]
        for a in sorted(self.allocations, key=lambda a: -a.nbytes):
            ok = self.max_allocation is None or a.nbytes <= self.max_allocation or not a.on_device
            where = "" if a.on_device else " (host)"
            lines.append(f"{(a.name[:58 - len(where)] + where):<58} {a.phase:<20} {format_bytes(a.nbytes):>11}  "
                         f"{'yes' if ok else 'NO'}")
        lines += ["", f"{'phase':<24} {'device memory':>14} {'host memory':>12}"]
        for ph in self.phases:
            lines.append(f"{ph.phase:<24} {format_bytes(ph.device):>14} {format_bytes(ph.host):>12}")
        lines.append(f"{'peak':<24} {format_bytes(self.peak):>14}")
        lines.append("")
        lines.append(f"largest single allocation: {self.largest.name}, {format_bytes(self.largest.nbytes)}")
        lines.append("FITS" if self.fits else "DOES NOT FIT: " + "; ".join(self.problems))
        if self.suggestions:
            lines.append("what would fit instead:" if not self.fits else "notes:")
            lines += [f"  - {s}" for s in self.suggestions]
        return "\n".join(lines)


def refusal(report: Preflight) -> AllocationTooLargeError:
    """The exception a pipeline raises for a report that does not fit."""
    a = report.largest
    host = next((x for x in report.allocations if x.kind == "host buffer"), None)
    what: Allocation | PhaseTotal
    budget = report.params.get("max_vram")
    if host is not None:
        required, limit, what = host.nbytes, system.host_memory(), host
    elif budget is not None and report.max_vram_floor is not None and report.max_vram_floor > budget:
        whose = report.params.get("max_vram_floor_component")
        segment = next((x for x in report.allocations if x.kind in ("segment weights", "weights buffer")
                        and x.phase != "load" and x.component == whose), report.largest)
        required, limit, what = report.max_vram_floor, budget, segment
    elif report.max_allocation is not None and a.nbytes > report.max_allocation:
        required, limit, what = a.nbytes, report.max_allocation, a
    else:
        worst = max(report.phases, key=lambda p: p.device)
        required, limit, what = worst.device, report.total_memory or 0, worst
    message = f"pre-flight: {report.model} at {report.params['width']}x{report.params['height']}, " \
              f"{report.params['num_frames']} frames does not fit on {report.device}: " + "; ".join(report.problems)
    if report.suggestions:
        message += ". What would fit instead: " + "; ".join(report.suggestions)
    message += ". (preflight=False skips this check.)"
    return AllocationTooLargeError(message, required=required, limit=limit, allocation=what,
                                   suggestions=report.suggestions)
