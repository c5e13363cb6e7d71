"""The pre-flight's boundary on a real Vulkan driver (Mesa lavapipe), with the patched flash
attention in the graph: ggml's buffer ceiling set exactly at the predicted largest allocation,
a real generation passes; one byte below, the pre-flight refuses and a real generation
(preflight=False) fails cleanly, and fit="auto" then finds the settings that do fit.

Slow: lavapipe runs a 1.3B step and the VAE on two CPU cores (minutes per process).
"""

from __future__ import annotations

import json

import pytest

from conftest import run_python

pytestmark = [pytest.mark.vulkan, pytest.mark.slow]

CASE = """
import json, wanpy
from wanpy.testing import cached_model_set
m = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
request = dict(width=48, height=48, num_frames=1)
out = {{}}
report = wanpy.preflight(m.diffusion_model, vae=m.vae, flash_attention=True, suggest=False, **request)
out["preflight"] = [report.fits, report.largest.name, report.largest.nbytes, report.max_allocation]
with wanpy.WanPipeline(m.diffusion_model, m.vae, flash_attention=True, n_threads=2) as pipe:
    out["device"] = pipe.device.name
    run = dict(steps=1, cfg_scale=1.0, seed=5, progress=False, **request)
    try:
        out["strict"] = list(pipe.generate_video("fox", **run).frames.shape)
    except wanpy.AllocationTooLargeError as exc:
        out["strict"] = ["refused", exc.required, exc.limit]
    try:
        out["unchecked"] = list(pipe.generate_video("fox", preflight=False, **run).frames.shape)
    except wanpy.GenerationError as exc:
        out["unchecked"] = ["GenerationError", str(exc)[:300]]
    if {auto}:
        video = pipe.generate_video("fox", fit="auto", **run)
        out["auto"] = [list(video.frames.shape), video.params["fit"]]
print("RESULT " + json.dumps(out))
"""

# the Wan VAE decoder's 3-D im2col is the largest allocation at 48x48, 1 frame, untiled:
# f16 [2592, 48, 48] (the next largest: 7,962,624 B weight tensors)
IM2COL_BYTES = 2592 * 48 * 48 * 2


def run_case(ceiling: int, auto: bool) -> dict:
    env = {"GGML_VK_VISIBLE_DEVICES": "0", "GGML_VK_FORCE_MAX_BUFFER_SIZE": str(ceiling),
           "GGML_VK_SUBALLOCATION_BLOCK_SIZE": str(ceiling)}
    result = run_python(CASE.format(auto=auto), env=env, timeout=2400)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_at_the_predicted_size_both_pass():
    out = run_case(IM2COL_BYTES, auto=False)
    assert out["device"] == "Vulkan0"
    assert out["preflight"] == [True, "vae im2col_3d f16 [2592, 48, 48]", IM2COL_BYTES, IM2COL_BYTES]
    assert out["strict"] == [1, 48, 48, 3]
    assert out["unchecked"] == [1, 48, 48, 3]


def test_one_byte_below_the_preflight_refuses_the_engine_fails_and_auto_fits():
    out = run_case(IM2COL_BYTES - 1, auto=True)
    assert out["preflight"][:3] == [False, "vae im2col_3d f16 [2592, 48, 48]", IM2COL_BYTES]
    assert out["strict"] == ["refused", IM2COL_BYTES, IM2COL_BYTES - 1]
    assert out["unchecked"][0] == "GenerationError"  # ggml could not allocate; the process lives on
    shape, fit = out["auto"]
    assert shape == [1, 48, 48, 3]
    # the latent is 6x6, so sd.cpp's default tile (32) is the whole frame: a smaller tile fits
    assert fit["changed"] == {"vae_tiling": {"asked": False, "chosen": True},
                              "tile_size": {"asked": None, "chosen": [5, 5]}}
