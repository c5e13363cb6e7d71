"""What this build of wanpy is and what its devices can really do.

``system_info()`` reports the backend compiled in, the sd.cpp version, every device
with its memory and, for Vulkan, the driver's allocation limits next to the ceiling
ggml will actually enforce, plus a report of the relevant environment variables:
read by this build (derived from the compiled sources), read by the GPU runtime, or
UNKNOWN (a name nothing here reads, such as GGML_VK_FORCE_CONCURRENT).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from wanpy import _core
from wanpy.units import format_exact_bytes, format_gib
from wanpy.validation import check_int

logger = logging.getLogger("wanpy")

DeviceType = Literal["cpu", "gpu", "igpu", "accel", "unknown"]
EnvStatus = Literal["read", "runtime", "wanpy", "unknown"]

# Prefixes whose variables are reported; anything set under them is classified.
ENV_PREFIXES = ("GGML_", "SD_", "VK_", "HSA_", "HIP_", "ROCR_", "ROCBLAS_", "CUDA_", "WANPY_")

# Variables read by the GPU runtimes themselves (loader/driver), not by compiled
# sources. They depend on the backend the module was built for.
RUNTIME_ENV = {
    "vulkan": frozenset({
        "VK_ICD_FILENAMES", "VK_DRIVER_FILES", "VK_ADD_DRIVER_FILES", "VK_LAYER_PATH",
        "VK_ADD_LAYER_PATH", "VK_INSTANCE_LAYERS", "VK_LOADER_DEBUG", "VK_LOADER_LAYERS_ENABLE",
        "VK_LOADER_LAYERS_DISABLE", "VK_LOADER_DRIVERS_SELECT", "VK_LOADER_DRIVERS_DISABLE",
        "VK_LOADER_DEVICE_SELECT", "VK_LOADER_DISABLE_INST_EXT_FILTER",
    }),
    # ROCm's runtime (HIP, ROCr) and rocBLAS, which ggml-hip's matrix products call
    "hip": frozenset({
        "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HSA_OVERRIDE_GFX_VERSION",
        "HSA_ENABLE_SDMA", "HSA_XNACK", "HIP_LAUNCH_BLOCKING", "HIP_FORCE_SPIRV_CODEOBJECT",
        "ROCBLAS_USE_HIPBLASLT", "ROCBLAS_LAYER", "ROCBLAS_TENSILE_LIBPATH",
    }),
    # the CUDA runtime and driver (the CUDA C++ Programming Guide's environment variables)
    "cuda": frozenset({
        "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING",
        "CUDA_CACHE_PATH", "CUDA_CACHE_DISABLE", "CUDA_CACHE_MAXSIZE", "CUDA_FORCE_PTX_JIT",
        "CUDA_DISABLE_PTX_JIT", "CUDA_FORCE_JIT", "CUDA_DISABLE_JIT", "CUDA_DEVICE_MAX_CONNECTIONS",
        "CUDA_AUTO_BOOST", "CUDA_MANAGED_FORCE_DEVICE_ALLOC", "CUDA_MODULE_DATA_LOADING",
    }),
    "cpu": frozenset(),
    "metal": frozenset(),
}

# wanpy's own variables (documented in the README), and those of its build/test scripts.
WANPY_ENV = frozenset({"WANPY_MODEL_CACHE", "WANPY_SDCPP_DIR", "WANPY_TEST_VULKAN", "WANPY_VULKAN_CMAKE_ARGS",
                       "WANPY_VULKAN_DIR", "WANPY_DEBIAN_MIRROR", "WANPY_TEST_BACKENDS", "WANPY_BACKEND_CHECK_DIR",
                       "WANPY_CHECK_FRESH", "WANPY_CHECK_STOP_AFTER", "WANPY_CUDA_ARCHS", "WANPY_HIP_TARGETS",
                       "WANPY_BUILD_JOBS", "WANPY_API_KEY"})
SECRET_ENV = frozenset({"WANPY_API_KEY"})  # reported as set, never shown

GPU_BACKENDS = frozenset({"vulkan", "cuda", "hip", "metal"})


@dataclass(frozen=True)
class Device:
    """A device this build can run on.

    ``buffer_alignment`` and ``buffer_max_size`` are ggml's for its buffers (the pre-flight
    sizes graphs with them). ``max_allocation`` is the largest single buffer that can be allocated on it:
    None means no per-allocation ceiling (CPU, CUDA, HIP). For Vulkan it is
    ``min(max_memory_allocation_size, ggml_max_buffer_size)``: the driver refuses
    any vkAllocateMemory above the first, ggml refuses any buffer above the second
    (maxBufferSize, or GGML_VK_FORCE_MAX_BUFFER_SIZE). GGML_VK_FORCE_MAX_ALLOCATION_SIZE
    only caps ggml's sub-allocation block (``ggml_suballocation_block_size``), how
    buffers are split; a single larger tensor still gets its own buffer.
    """

    index: int
    name: str
    description: str
    type: DeviceType
    backend: str
    total_memory: int
    free_memory: int
    max_allocation: int | None = None
    max_memory_allocation_size: int | None = None
    max_buffer_size: int | None = None
    max_storage_buffer_range: int | None = None
    ggml_max_buffer_size: int | None = None
    ggml_suballocation_block_size: int | None = None
    driver: str | None = None
    buffer_alignment: int = 32
    buffer_max_size: int | None = None  # ggml's largest buffer (chunk) for this device; None: unbounded

    def __str__(self) -> str:
        text = f"#{self.index} {self.name} ({self.type}, {self.backend}): {self.description}, " \
               f"memory {format_gib(self.total_memory)} total / {format_gib(self.free_memory)} free"
        if self.backend.lower() == "vulkan":
            text += (
                f"\n    driver {self.driver};"
                f" maxMemoryAllocationSize {format_exact_bytes(self.max_memory_allocation_size)},"
                f" maxBufferSize {format_exact_bytes(self.max_buffer_size)},"
                f" maxStorageBufferRange {format_exact_bytes(self.max_storage_buffer_range)}"
                f"\n    ggml: max buffer {format_exact_bytes(self.ggml_max_buffer_size)},"
                f" sub-allocation block {format_exact_bytes(self.ggml_suballocation_block_size)}"
                f"\n    largest single allocation (max_allocation): {format_exact_bytes(self.max_allocation)}"
            )
        else:
            text += "\n    largest single allocation: no per-allocation ceiling"
        return text


@dataclass(frozen=True)
class EnvVar:
    """One environment variable under a reported prefix, and who reads it."""

    name: str
    value: str
    status: EnvStatus

    def __str__(self) -> str:
        label = {"read": "read by this build", "runtime": "read by the GPU runtime",
                 "wanpy": "read by wanpy", "unknown": "UNKNOWN: nothing in this build reads it"}[self.status]
        return f"{self.name}={self.value}  [{label}]"


@dataclass(frozen=True)
class SystemInfo:
    """What was compiled in and what the devices can do (``wanpy.system_info()``)."""

    wanpy_version: str
    sdcpp_version: str
    sdcpp_source: str
    backend: str
    devices: list[Device]
    environment: list[EnvVar] = field(default_factory=list)
    env_vars_read: tuple[str, ...] = ()
    cpu_features: str = ""
    warnings: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        from wanpy.display import system_html

        return system_html(self)

    def __str__(self) -> str:
        lines = [
            f"wanpy {self.wanpy_version}",
            f"stable-diffusion.cpp: {self.sdcpp_version} ({self.sdcpp_source})",
            f"backend compiled in: {self.backend}",
            f"CPU features: {self.cpu_features}",
            "devices:",
        ]
        lines += ["  " + str(d).replace("\n", "\n  ") for d in self.devices] or ["  (none)"]
        lines.append("environment:")
        lines += [f"  {v}" for v in self.environment] or [
            "  (no " + ", ".join(p + "*" for p in ENV_PREFIXES) + " set)"]
        lines.append(f"variables this build reads: {', '.join(self.env_vars_read)}")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _env_int(name: str) -> int | None:
    """ggml reads its size overrides with std::stoull; mirror that (decimal only)."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip(), 10)
    except ValueError:
        return None


def _vulkan_limits(limits: dict[str, Any]) -> dict[str, Any]:
    """The ceilings ggml-vulkan derives from the driver's limits and its variables."""
    driver_alloc = int(limits["max_memory_allocation_size"])
    driver_buffer = limits["max_buffer_size"]  # None without VK_KHR_maintenance4
    forced_alloc = _env_int("GGML_VK_FORCE_MAX_ALLOCATION_SIZE")
    forced_buffer = _env_int("GGML_VK_FORCE_MAX_BUFFER_SIZE")
    forced_block = _env_int("GGML_VK_SUBALLOCATION_BLOCK_SIZE")
    if forced_alloc is not None:
        ggml_alloc = forced_alloc
    elif driver_buffer is not None:
        ggml_alloc = min(driver_alloc, int(driver_buffer))
    else:
        ggml_alloc = driver_alloc
    if forced_buffer is not None:
        ggml_buffer = forced_buffer
    elif driver_buffer is not None:
        ggml_buffer = int(driver_buffer)
    else:
        ggml_buffer = ggml_alloc
    block = min(forced_block if forced_block is not None else 2**30, ggml_alloc)
    return {
        "max_memory_allocation_size": driver_alloc,
        "max_buffer_size": None if driver_buffer is None else int(driver_buffer),
        "max_storage_buffer_range": int(limits["max_storage_buffer_range"]),
        "ggml_max_buffer_size": ggml_buffer,
        "ggml_suballocation_block_size": block,
        "max_allocation": min(driver_alloc, ggml_buffer),
        "buffer_alignment": int(limits["min_storage_buffer_offset_alignment"]),
        "buffer_max_size": block,
        "driver": f"{limits['driver_name']} {limits['driver_info']}".strip(),
    }


@functools.cache
def _driver_limits() -> dict[str, dict[str, Any]]:
    """The Vulkan driver's limits by ggml device name. Reading them creates a Vulkan
    instance; they do not change while the process runs (ggml reads them once too)."""
    if not hasattr(_core, "vulkan_device_limits"):
        return {}
    return {d["ggml_name"]: d for d in _core.vulkan_device_limits()}


def devices() -> list[Device]:
    """Every device this build can run on, in ggml's order (GPUs first, then the CPU)."""
    vk_limits = _driver_limits()
    out = []
    for d in _core.backend_devices():
        extra: dict[str, Any] = {}
        if d.get("buffer_alignment") is not None:
            extra["buffer_alignment"] = int(d["buffer_alignment"])
            max_size = int(d["buffer_max_size"])
            extra["buffer_max_size"] = None if max_size >= 2**63 else max_size
        if d["name"] in vk_limits:
            extra = _vulkan_limits(vk_limits[d["name"]])
        out.append(Device(
            index=int(d["ggml_index"]), name=d["name"], description=d["description"], type=d["type"],
            backend=d["backend"], total_memory=int(d["memory_total"]), free_memory=int(d["memory_free"]),
            **extra,
        ))
    return out


def resolve_device(device: Device | int | None, devs: list[Device] | None = None) -> Device:
    """The device a pipeline (and its pre-flight) runs on: ``device`` (a ``Device`` or its
    index) looked up in ``devs`` (default: ``devices()``); None: the first GPU, else the CPU.

    An index or Device not in ``devs`` raises ValueError, as does the CPU on a GPU build:
    sd.cpp 0.4.7 always takes a GPU when ggml has one.
    """
    if devs is None:
        devs = devices()
    if device is None:
        gpus = [d for d in devs if d.type in ("gpu", "igpu", "accel")]
        return gpus[0] if gpus else next(d for d in devs if d.type == "cpu")
    if isinstance(device, Device):
        device = device.index
    index = check_int("device", device, minimum=0)
    for d in devs:
        if d.index == index:
            if d.type == "cpu" and any(g.backend.lower() != "cpu" for g in devs):
                # saying the CPU would run it would be a lie
                raise ValueError(f"device {index} is the CPU, but this {_core.BACKEND} build runs sd.cpp on its "
                                 "GPU whenever one is visible; to run on the CPU, hide the GPUs before importing "
                                 "wanpy (e.g. GGML_VK_VISIBLE_DEVICES='') or use a CPU build")
            return d
    raise ValueError(f"device {index} does not exist; devices: {', '.join(f'{d.index} {d.name}' for d in devs)}")


def host_memory() -> int:
    """This machine's physical memory (RAM), in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def environment_report(backend: str | None = None) -> list[EnvVar]:
    """Classify every set variable under the reported prefixes; log UNKNOWN ones."""
    backend = backend or _core.BACKEND
    read = frozenset(_core.env_vars_read())
    runtime = RUNTIME_ENV.get(backend, frozenset())
    report = []
    for name in sorted(os.environ):
        if not name.startswith(ENV_PREFIXES):
            continue
        if name in read:
            status: EnvStatus = "read"
        elif name in runtime:
            status = "runtime"
        elif name in WANPY_ENV:
            status = "wanpy"
        else:
            status = "unknown"
            logger.warning("environment variable %s is set but nothing in this wanpy build (%s backend) "
                           "reads it: it has no effect", name, backend)
        report.append(EnvVar(name, "(set, not shown)" if name in SECRET_ENV else os.environ[name], status))
    return report


def backend_warnings(backend: str, devs: list[Device]) -> tuple[str, ...]:
    """A GPU build that finds no GPU must say so, never quietly run on the CPU."""
    if backend in GPU_BACKENDS and not any(d.backend.lower() != "cpu" for d in devs):
        return (f"this wanpy was built for {backend} but found no usable {backend} device: "
                "generation would run on the CPU",)
    return ()


def system_info() -> SystemInfo:
    """What was compiled in and what the devices can really do."""
    from wanpy import __version__

    devs = devices()
    return SystemInfo(
        wanpy_version=__version__,
        sdcpp_version=_core.sdcpp_version(),
        sdcpp_source=_core.SDCPP_SOURCE,
        backend=_core.BACKEND,
        devices=devs,
        environment=environment_report(),
        env_vars_read=tuple(_core.env_vars_read()),
        cpu_features=" ".join(p.strip() for p in _core.sdcpp_system_info().replace("System Info:", "").split("|")
                              if p.strip().endswith("= 1")).replace(" = 1", ""),
        warnings=backend_warnings(_core.BACKEND, devs),
    )
