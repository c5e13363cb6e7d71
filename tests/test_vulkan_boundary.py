"""The pre-flight's boundary on a real Vulkan driver (Mesa lavapipe), with the patched flash
attention in the graph: ggml's buffer ceiling set exactly at the predicted largest allocation,
a real generation passes; one byte below, the pre-flight refuses and a real generation
(preflight=False) fails cleanly, and fit="auto" then finds the settings that do fit (or says
that none does). Two shapes, where different tensors are the largest: the VAE decoder's im2col
(48x48, 1 frame) and the DiT's feed-forward activation while sampling (128x128, 13 frames, the
VAE kept on the CPU). One byte below the feed-forward activation, patch 0007 computes it in two
token chunks: the pre-flight and the engine agree, and the frames equal the unchunked run's at
a ceiling that holds it; with the patch's path switched off (WANPY_FFN_CHUNKS=1) the old
boundary holds.

Slow: lavapipe runs a 1.3B step and the VAE on two CPU cores (minutes per process).
"""

from __future__ import annotations

import json
from functools import cache

import pytest

from conftest import run_python

pytestmark = [pytest.mark.vulkan, pytest.mark.slow]

CASE = """
import hashlib, json, wanpy
from wanpy import _core
from wanpy.testing import cached_model_set
m = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
request = {request}
settings = dict(flash_attention=True, keep_vae_on_cpu={keep_vae_on_cpu})
out = {{}}
report = wanpy.preflight(m.diffusion_model, vae=m.vae, suggest=False, **settings, **request)
out["preflight"] = [report.fits, report.largest.name, report.largest.nbytes, report.max_allocation]
out["sampling_tensor"] = next(a.name for a in report.allocations if a.phase == "sampling" and a.kind == "tensor")
with wanpy.WanPipeline(m.diffusion_model, m.vae, n_threads=2, **settings) as pipe:
    out["device"] = pipe.device.name
    out["registered_ceiling"] = _core.tensor_ceiling(pipe.device.name)
    run = dict(steps=1, cfg_scale=1.0, seed=5, progress=False, **request)
    try:
        frames = pipe.generate_video("fox", **run).frames
        out["strict"] = list(frames.shape)
        out["digest"] = hashlib.sha256(frames.tobytes()).hexdigest()
    except wanpy.AllocationTooLargeError as exc:
        out["strict"] = ["refused", exc.required, exc.limit]
    try:
        out["unchecked"] = list(pipe.generate_video("fox", preflight=False, **run).frames.shape)
    except wanpy.GenerationError as exc:
        out["unchecked"] = ["GenerationError", str(exc)[:300]]
    if {auto}:
        try:
            video = pipe.generate_video("fox", fit="auto", **run)
            out["auto"] = [list(video.frames.shape), video.params["fit"]]
        except wanpy.AllocationTooLargeError as exc:
            out["auto"] = ["refused", str(exc)]
print("RESULT " + json.dumps(out))
"""

# the Wan VAE decoder's 3-D im2col is the largest allocation at 48x48, 1 frame, untiled:
# f16 [2592, 48, 48] (the next largest: 7,962,624 B weight tensors)
IM2COL_BYTES = 2592 * 48 * 48 * 2


# with the VAE on the CPU, at 128x128 and 13 frames (256 tokens) the largest allocation on the
# device is the DiT's feed-forward activation, f32 [8960, 256] (the largest weight: 7,962,624 B)
FFN_BYTES = 8960 * 256 * 4


def run_case(ceiling: int, auto: bool, request: str = "dict(width=48, height=48, num_frames=1)",
             keep_vae_on_cpu: bool = False, ffn_chunks: str | None = None) -> dict:
    env = {"GGML_VK_VISIBLE_DEVICES": "0", "GGML_VK_FORCE_MAX_BUFFER_SIZE": str(ceiling),
           "GGML_VK_SUBALLOCATION_BLOCK_SIZE": str(ceiling)}
    if ffn_chunks is not None:
        env["WANPY_FFN_CHUNKS"] = ffn_chunks
    result = run_python(CASE.format(auto=auto, request=request, keep_vae_on_cpu=keep_vae_on_cpu), env=env,
                        timeout=2400)
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


FFN_REQUEST = "dict(width=128, height=128, num_frames=13)"


@cache
def ffn_at_size() -> dict:
    return run_case(FFN_BYTES, auto=False, request=FFN_REQUEST, keep_vae_on_cpu=True)


def test_dit_activation_largest_at_the_predicted_size_both_pass():
    out = ffn_at_size()
    assert out["preflight"] == [True, "diffusion_model mul_mat f32 [8960, 256]", FFN_BYTES, FFN_BYTES]
    assert out["registered_ceiling"] == FFN_BYTES  # what sd.cpp chunks against: the device's ceiling
    assert out["strict"] == [13, 128, 128, 3]
    assert out["unchecked"] == [13, 128, 128, 3]


def test_dit_activation_one_byte_below_is_chunked_and_gives_the_same_frames():
    out = run_case(FFN_BYTES - 1, auto=False, request=FFN_REQUEST, keep_vae_on_cpu=True)
    fits, _, largest, ceiling = out["preflight"]
    assert fits and largest <= ceiling == FFN_BYTES - 1
    assert out["sampling_tensor"] == \
        "diffusion_model mul_mat f32 [8960, 128] (the feed-forward block in 2 token chunks)"
    assert out["registered_ceiling"] == FFN_BYTES - 1
    assert out["strict"] == [13, 128, 128, 3]
    assert out["unchecked"] == [13, 128, 128, 3]
    assert out["digest"] == ffn_at_size()["digest"]  # the same frames as the unchunked run


def test_dit_activation_unchunked_one_byte_below_refused_fails_and_nothing_fits():
    out = run_case(FFN_BYTES - 1, auto=True, request=FFN_REQUEST, keep_vae_on_cpu=True, ffn_chunks="1")
    assert out["preflight"][:3] == [False, "diffusion_model mul_mat f32 [8960, 256]", FFN_BYTES]
    assert out["strict"] == ["refused", FFN_BYTES, FFN_BYTES - 1]
    assert out["unchecked"][0] == "GenerationError"  # ggml could not allocate; the process lives on
    # flash attention is on and the VAE already on the CPU: no setting shrinks the DiT's activation,
    # so fit="auto" refuses too, and says what size or frame count would fit
    assert out["auto"][0] == "refused"
    assert "frames" in out["auto"][1]
