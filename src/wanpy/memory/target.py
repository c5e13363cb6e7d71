"""The device a pre-flight measures for: its alignment, buffer chunk, ceiling and memory.

The device is the one a pipeline would use (``wanpy.system.resolve_device``); the caller may
override its per-allocation ceiling and memory to model another device.
"""

from __future__ import annotations

from dataclasses import dataclass

from wanpy.system import Device, resolve_device
from wanpy.units import GiB, format_bytes, parse_bytes

__all__ = ["UNBOUNDED", "VK_DEFAULT_BLOCK", "Target", "target"]

VK_DEFAULT_BLOCK = GiB  # ggml-vulkan's default sub-allocation block (buffer chunk) size
UNBOUNDED = 2**64 - 1  # a chunk size: ggml never splits the buffer


@dataclass(frozen=True)
class Target:
    """What the measurement needs of the device: ggml's buffer ``alignment``, the largest
    buffer ``chunk`` it makes (UNBOUNDED: none), the per-allocation ceiling and the memory
    checked (None: none), its name for the report, and whether it is the CPU (where keeping
    the VAE on the CPU and offloading weights change nothing)."""

    alignment: int
    chunk: int
    max_allocation: int | None
    total_memory: int | None
    name: str
    is_cpu: bool

    @property
    def buffer_max_size(self) -> int | None:
        """``chunk`` as the report gives it: None when unbounded."""
        return None if self.chunk >= 2**63 else self.chunk


def target(device: Device | int | None, max_allocation: int | str | None, total_memory: int | str | None) -> Target:
    """The pre-flight's target: ``device`` as a pipeline resolves it, with ``max_allocation``
    (a modelled Vulkan device of that ceiling) and ``total_memory`` overriding its figures."""
    dev = resolve_device(device)
    limit = dev.max_allocation if max_allocation is None else parse_bytes(max_allocation)
    chunk = dev.buffer_max_size or UNBOUNDED
    if limit is not None and max_allocation is not None:
        # a device with a per-allocation ceiling, as ggml-vulkan splits buffers for it
        chunk = min(chunk, VK_DEFAULT_BLOCK, limit) if dev.buffer_max_size else min(VK_DEFAULT_BLOCK, limit)
    if total_memory is not None:
        memory: int | None = parse_bytes(total_memory)
    elif max_allocation is not None:
        memory = None  # a modelled device: its memory is only checked when given
    else:
        memory = dev.total_memory
    name = dev.name + (f" with max_allocation {format_bytes(limit)}" if max_allocation is not None else "") + \
        (f" with total_memory {format_bytes(memory)}" if total_memory is not None else "")
    # a modelled device (max_allocation given) is a GPU: keeping the VAE on the CPU and
    # offloading weights are options there
    return Target(dev.buffer_alignment, chunk, limit, memory or None, name,
                  dev.type == "cpu" and max_allocation is None)
