"""The build: importable module, versions, devices, environment report, logging."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os

import pytest

import wanpy
from wanpy import _core, _logging, system
from wanpy.system import backend_warnings, Device, resolve_device


def test_version_matches_distribution():
    assert wanpy.__version__ == importlib.metadata.version("wanpy")


def test_core_is_private_submodule_of_the_package():
    assert _core.__name__ == "wanpy._core"
    assert "_core" not in wanpy.__all__


def test_sdcpp_version_is_the_pinned_sdist():
    info = wanpy.system_info()
    assert info.sdcpp_version == "stable-diffusion-cpp-python-0.4.7"
    assert info.sdcpp_source.startswith("stable-diffusion-cpp-python==0.4.7 sdist")


def test_system_info_lists_the_cpu_device():
    info = wanpy.system_info()
    assert info.backend in {"cpu", "vulkan", "cuda", "hip"}
    cpus = [d for d in info.devices if d.type == "cpu"]
    assert len(cpus) == 1
    cpu = cpus[0]
    assert isinstance(cpu, Device)
    assert cpu.total_memory > 2**30
    assert 0 < cpu.free_memory <= cpu.total_memory
    assert cpu.max_allocation is None  # no per-allocation ceiling on the CPU
    assert "largest single allocation" in str(info)


def test_env_vars_read_are_derived_from_the_compiled_sources():
    names = set(_core.env_vars_read())
    # sd.cpp's util.cpp and ggml's scheduler read these; nothing invents them
    assert {"SD_VK_DEVICE", "GGML_SCHED_DEBUG"} <= names
    assert "GGML_VK_FORCE_CONCURRENT" not in names
    if _core.BACKEND == "vulkan":
        assert {"GGML_VK_FORCE_MAX_ALLOCATION_SIZE", "GGML_VK_FORCE_MAX_BUFFER_SIZE",
                "GGML_VK_VISIBLE_DEVICES"} <= names
    else:
        assert not any(n.startswith("GGML_VK_") for n in names)


def test_fabricated_variable_is_flagged_unknown(python_subprocess):
    code = (
        "import json, logging, wanpy\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "print(json.dumps({v.name: v.status for v in wanpy.system_info().environment}))\n"
    )
    result = python_subprocess(code, env={"GGML_VK_FORCE_CONCURRENT": "1", "SD_VK_DEVICE": "0",
                                          "WANPY_MODEL_CACHE": "/tmp/x"})
    assert result.returncode == 0, result.stderr
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses["GGML_VK_FORCE_CONCURRENT"] == "unknown"
    assert statuses["SD_VK_DEVICE"] == "read"
    assert statuses["WANPY_MODEL_CACHE"] == "wanpy"
    assert "GGML_VK_FORCE_CONCURRENT is set but nothing in this wanpy build" in result.stderr


@pytest.mark.parametrize("backend,runtime_var", [("cuda", "CUDA_VISIBLE_DEVICES"), ("hip", "HIP_VISIBLE_DEVICES"),
                                                  ("hip", "ROCBLAS_USE_HIPBLASLT")])
def test_environment_report_knows_each_gpu_runtime(monkeypatch, caplog, backend, runtime_var):
    # what the CUDA or ROCm runtime reads is reported as such on that build, and as read by nothing
    # on another; a name nobody reads is UNKNOWN and logged (CUDA_HOME: build tools read it, not programs)
    for name in [n for n in os.environ if n.startswith(system.ENV_PREFIXES)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(runtime_var, "0")
    monkeypatch.setenv("CUDA_HOME", "/usr/local/cuda")
    report = {v.name: v.status for v in system.environment_report(backend)}
    assert report == {runtime_var: "runtime", "CUDA_HOME": "unknown"}
    assert "CUDA_HOME is set but nothing in this wanpy build" in caplog.text
    other = {v.name: v.status for v in system.environment_report("vulkan")}
    assert other[runtime_var] == "unknown"


def test_gpu_build_without_gpu_says_so():
    cpu = Device(index=0, name="CPU", description="x", type="cpu", backend="CPU", total_memory=1, free_memory=1)
    (warning,) = backend_warnings("vulkan", [cpu])
    assert "built for vulkan but found no usable vulkan device" in warning
    assert backend_warnings("cpu", [cpu]) == ()
    for backend in ("cuda", "hip"):
        (warning,) = backend_warnings(backend, [cpu])
        assert f"built for {backend} but found no usable {backend} device: generation would run on the CPU" in warning


def _device(index, type_, backend):
    return Device(index=index, name=f"{backend}{index}", description="x", type=type_, backend=backend,
                  total_memory=1, free_memory=1)


def test_one_device_resolver_for_pipelines_and_the_preflight():
    cpu_only = [_device(0, "cpu", "CPU")]
    gpus = [_device(0, "igpu", "Vulkan"), _device(1, "gpu", "Vulkan"), _device(2, "cpu", "CPU")]
    # default: the first GPU, else the CPU
    assert resolve_device(None, cpu_only) is cpu_only[0]
    assert resolve_device(None, gpus) is gpus[0]
    assert resolve_device(1, gpus) is gpus[1]
    assert resolve_device(gpus[1], gpus) is gpus[1]
    # a GPU build runs sd.cpp on its GPU: asking for the CPU there is refused, not ignored
    with pytest.raises(ValueError, match="device 2 is the CPU, but this .* build runs sd.cpp on its GPU"):
        resolve_device(2, gpus)
    with pytest.raises(ValueError, match=r"device 3 does not exist; devices: 0 Vulkan0, 1 Vulkan1, 2 CPU2"):
        resolve_device(_device(3, "gpu", "Vulkan"), gpus)
    with pytest.raises(ValueError, match="device must be >= 0, got -1"):
        resolve_device(-1, gpus)
    for bad in (True, "0", 1.0):
        with pytest.raises(TypeError, match="device must be an integer"):
            resolve_device(bad, gpus)
    # without a list, this machine's devices
    assert resolve_device(None) == resolve_device(None, wanpy.devices())


def test_preflight_measures_for_the_device_a_pipeline_would_use():
    here = resolve_device(None)
    report = wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5, suggest=False)
    assert report.device == here.name
    with pytest.raises(ValueError, match="device 99 does not exist"):
        wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5, device=99)


@pytest.mark.parametrize(("level", "expected"), [
    ("debug", logging.DEBUG), ("info", logging.INFO), ("warning", logging.WARNING), ("error", logging.ERROR),
])
def test_log_level_mapping(caplog, level, expected):
    with caplog.at_level(logging.DEBUG, logger="wanpy"):
        _logging._sink("sd", level, "hello from sd.cpp")
    (record,) = [r for r in caplog.records if r.getMessage() == "hello from sd.cpp"]
    assert record.levelno == expected
    assert record.name == "wanpy"
    assert record.wanpy_source == "sd"


def test_cli_info_runs(python_subprocess):
    result = python_subprocess("import sys; from wanpy.cli import main; sys.exit(main(['info']))")
    assert result.returncode == 0, result.stderr
    assert "backend compiled in: " + _core.BACKEND in result.stdout
    assert "stable-diffusion-cpp-python-0.4.7" in result.stdout


def test_ggml_gguf_5d_rejection_is_demoted_because_sdcpp_recovers(caplog):
    with caplog.at_level(logging.DEBUG, logger="wanpy"):
        _logging._sink("sd", "error", "gguf_init_from_file_ptr: tensor 'patch_embedding.weight' has invalid "
                                      "number of dimensions: 5 > 4")
        _logging._sink("sd", "error", "some real failure")
    levels = {r.getMessage()[:20]: r.levelno for r in caplog.records}
    assert levels["gguf_init_from_file_"] == logging.DEBUG
    assert levels["some real failure"] == logging.ERROR


def test_sdcpp_source_location_is_kept_apart_from_the_message(caplog):
    with caplog.at_level(logging.INFO, logger="wanpy"):
        _logging._sink("sd", "info", "stable-diffusion.cpp:3970 - sampling completed, taking 1.00s")
    (record,) = caplog.records
    assert record.getMessage() == "sampling completed, taking 1.00s"
    assert record.sdcpp_location == "stable-diffusion.cpp:3970"
