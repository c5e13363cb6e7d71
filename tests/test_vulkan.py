"""The Vulkan build on Mesa lavapipe: real driver limits, ggml's ceilings, environment report.

Run by .ci/run after `source .vulkan/env.sh`, with GGML_VK_VISIBLE_DEVICES=0
(ggml skips CPU-type Vulkan devices unless selected).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from wanpy import _core

pytestmark = pytest.mark.vulkan

DEVICE_JSON = (
    "import json, wanpy\n"
    "print(json.dumps([vars(d) for d in wanpy.devices() if d.backend == 'Vulkan']))\n"
)


def vulkan_devices(python_subprocess, **env):
    result = python_subprocess(DEVICE_JSON, env={"GGML_VK_VISIBLE_DEVICES": "0", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def vulkaninfo_limit(name: str) -> int:
    exe = shutil.which("vulkaninfo")
    assert exe, "vulkaninfo not on PATH: source .vulkan/env.sh (scripts/provide_vulkan.sh)"
    text = subprocess.run([exe], capture_output=True, text=True, timeout=120).stdout
    match = re.search(rf"\b{name}\s*=\s*(0x[0-9a-fA-F]+|\d+)", text)
    assert match, f"vulkaninfo printed no {name}"
    return int(match.group(1), 0)


def test_this_is_the_vulkan_build():
    assert _core.BACKEND == "vulkan"
    assert hasattr(_core, "vulkan_device_limits")


def test_lavapipe_is_listed_with_the_drivers_limits(python_subprocess):
    (dev,) = vulkan_devices(python_subprocess)
    assert dev["name"] == "Vulkan0"
    assert "llvmpipe" in dev["description"]
    assert dev["max_memory_allocation_size"] == vulkaninfo_limit("maxMemoryAllocationSize")
    assert dev["max_buffer_size"] == vulkaninfo_limit("maxBufferSize")
    assert dev["max_storage_buffer_range"] == vulkaninfo_limit("maxStorageBufferRange")
    # the single-buffer ceiling: min(driver's allocation limit, ggml's max buffer size)
    assert dev["max_allocation"] == min(dev["max_memory_allocation_size"], dev["max_buffer_size"])
    assert dev["total_memory"] > 0


def test_max_allocation_follows_the_forced_buffer_size(python_subprocess):
    (dev,) = vulkan_devices(python_subprocess, GGML_VK_FORCE_MAX_BUFFER_SIZE="78643200")
    assert dev["ggml_max_buffer_size"] == 78643200
    assert dev["max_allocation"] == 78643200


def test_forced_allocation_size_caps_the_suballocation_block_only(python_subprocess):
    # ggml splits buffers into blocks of at most this size, but one larger tensor still
    # gets its own buffer up to max_buffer_size: the ceiling does not move.
    plain = vulkan_devices(python_subprocess)[0]
    (dev,) = vulkan_devices(python_subprocess, GGML_VK_FORCE_MAX_ALLOCATION_SIZE="100000000")
    assert dev["ggml_suballocation_block_size"] == 100000000
    assert dev["max_allocation"] == plain["max_allocation"]


def test_environment_report_on_the_vulkan_build(python_subprocess):
    code = "import json, wanpy\nprint(json.dumps({v.name: v.status for v in wanpy.system_info().environment}))\n"
    result = python_subprocess(code, env={"GGML_VK_VISIBLE_DEVICES": "0", "GGML_VK_FORCE_CONCURRENT": "1",
                                          "GGML_VK_FORCE_MAX_BUFFER_SIZE": "4294967295"})
    assert result.returncode == 0, result.stderr
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses["GGML_VK_FORCE_CONCURRENT"] == "unknown"
    assert statuses["GGML_VK_FORCE_MAX_BUFFER_SIZE"] == "read"
    assert statuses["GGML_VK_VISIBLE_DEVICES"] == "read"
    assert statuses.get("VK_DRIVER_FILES", "runtime") == "runtime"
    assert "GGML_VK_FORCE_CONCURRENT is set but nothing in this wanpy build (vulkan backend)" in result.stderr


def test_no_device_selected_means_a_loud_warning(python_subprocess):
    # without GGML_VK_VISIBLE_DEVICES ggml skips lavapipe: there is no usable Vulkan device
    code = "import wanpy\nprint('\\n'.join(wanpy.system_info().warnings))\n"
    env = {"GGML_VK_VISIBLE_DEVICES": ""}
    result = python_subprocess(code, env=env)
    assert result.returncode == 0, result.stderr
    assert "built for vulkan but found no usable vulkan device" in result.stdout


GENERATE = """
import json, numpy as np, wanpy
from wanpy.testing import cached_model_set
m = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
with wanpy.WanPipeline(m.diffusion_model, m.vae, n_threads=2) as p:
    v = p.generate_video("a fox", width=32, height=32, num_frames=1, steps=1, seed=7, progress=False)
np.save({out!r}, v.frames)
print(json.dumps({{"device": v.params["device"]}}))
"""


@pytest.mark.slow
def test_generation_on_lavapipe_matches_the_cpu(python_subprocess, tmp_path):
    # One tiny generation: lavapipe compiles its shaders on first use (minutes on 2 cores).
    results = {}
    for label, visible in (("vulkan", "0"), ("cpu", "")):
        out = tmp_path / f"{label}.npy"
        run = python_subprocess(GENERATE.format(out=str(out)), env={"GGML_VK_VISIBLE_DEVICES": visible},
                                timeout=1500)
        assert run.returncode == 0, run.stderr[-3000:]
        info = json.loads(run.stdout.strip().splitlines()[-1])
        results[label] = (info["device"], np.load(out))
    assert results["vulkan"][0] == "Vulkan0"
    assert results["cpu"][0] == "CPU"
    vk, cpu = results["vulkan"][1].astype(int), results["cpu"][1].astype(int)
    assert vk.shape == cpu.shape == (1, 32, 32, 3)
    diff = np.abs(vk - cpu)
    # lavapipe's float order differs from ggml-cpu's: close, not identical
    assert diff.mean() < 3.0, diff.mean()
    assert cpu.std() > 1.0
