"""Pre-flight: predictions against what sd.cpp really allocates, presets against file headers,
suggestions that fit when applied, refusals before loading, and bad headers."""

from __future__ import annotations

import re

import numpy as np
import pytest

import wanpy
from wanpy import _logging, system
from wanpy.memory import PRESETS, host_video_bytes, refusal
from wanpy.testing import cached_model_set
from wanpy.testing.sdcpp_logs import compute_buffers, params_buffers

MiB = 2**20


@pytest.fixture(scope="module")
def t2v():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


@pytest.fixture(scope="module")
def big():
    return cached_model_set(variant="wan2.x-t2v-14b", dtype="q4_k", seed=0, sparse=True, text_encoder=True)


# --- 1. the grid: predictions equal sd.cpp's own compute buffers (CPU) ----------------------
GRID = [
    # (variant, width, height, frames, flash_attention, vae_tiling, tile_size, init image, vae_conv_direct)
    ("wan2.1-t2v-1.3b", 64, 64, 5, False, False, None, False, False),
    ("wan2.1-t2v-1.3b", 64, 64, 5, True, False, None, False, False),
    ("wan2.1-t2v-1.3b", 96, 64, 9, True, True, (4, 4), False, False),
    ("wan2.1-t2v-1.3b", 64, 48, 9, False, False, None, False, False),
    ("wan2.1-t2v-1.3b", 48, 80, 13, True, False, None, False, False),
    ("wan2.2-ti2v-5b", 32, 32, 5, False, False, None, True, False),
    # direct convolutions: the VAE's graphs without im2col (encode too, through the init image)
    ("wan2.1-t2v-1.3b", 64, 48, 9, False, False, None, False, True),
    ("wan2.2-ti2v-5b", 32, 32, 5, False, False, None, True, True),
    # VACE: the control video encoded (grey without one), the VACE context into the DiT; with a reference
    # image, its encode and one more latent frame sampled
    ("wan2.1-vace-1.3b", 48, 32, 9, False, False, None, False, False),
    ("wan2.1-vace-1.3b", 32, 32, 5, True, False, None, True, False),
]


@pytest.mark.slow
@pytest.mark.parametrize("variant,width,height,frames,fa,tiling,tile,image,direct", GRID)
def test_predicted_buffers_equal_what_sdcpp_allocates(variant, width, height, frames, fa, tiling, tile, image,
                                                      direct):
    models = cached_model_set(variant=variant, dtype="q4_0", seed=0)
    lines: list[str] = []
    with _logging.observe(lambda source, level, text: lines.append(text)):
        pipe = wanpy.WanPipeline(models.diffusion_model, models.vae, flash_attention=fa, vae_tiling=tiling,
                                 n_threads=2, vae_conv_direct=direct)
    with pipe:
        init = np.full((height, width, 3), 128, np.uint8) if image else None
        images = {"reference_image" if pipe.family.vace else "init_image": init}
        load_lines = list(lines)
        lines.clear()
        with _logging.observe(lambda source, level, text: lines.append(text)):
            pipe.generate_video("x", width=width, height=height, num_frames=frames, steps=1, seed=1,
                                progress=False, tile_size=tile, **images)
    report = wanpy.preflight(models.diffusion_model, vae=models.vae, width=width, height=height, num_frames=frames,
                             flash_attention=fa, vae_tiling=tiling, tile_size=tile, init_image=image,
                             vae_conv_direct=direct)
    logged = compute_buffers(lines)
    predicted = [(a.phase, a.buffer_total) for a in report.allocations if a.kind == "compute buffer"]
    # same runners, same order (VAE encode, sampling, VAE decode), each within sd.cpp's 0.01 MB rounding
    assert len(logged) == len(predicted), (logged, predicted)
    for (runner, got), (phase, want) in zip(logged, predicted):
        assert abs(got - want) <= 0.006 * MiB, f"{phase} ({runner}): sd.cpp {got / MiB:.2f} MB, predicted {want / MiB:.4f}"
    params = params_buffers(load_lines)
    weights = {a.component: a.buffer_total for a in report.allocations if a.kind == "weights buffer"}
    assert abs(params["wan_vae"] - weights["vae"]) <= 0.006 * MiB
    dit = next(v for k, v in params.items() if k.startswith("Wan"))
    assert abs(dit - weights["diffusion_model"]) <= 0.006 * MiB


# --- 2. the figures themselves ----------------------------------------------------------------
def test_attention_scores_are_the_largest_tensor_without_flash_attention():
    r = wanpy.preflight("wan2.1-t2v-1.3b", width=832, height=480, num_frames=81, max_allocation="4GiB")
    tokens = (832 // 16) * (480 // 16) * 21
    assert r.largest.kind == "tensor" and r.largest.phase == "sampling"
    assert r.largest.shape == (tokens, tokens, 12) and r.largest.dtype == "f32"
    assert r.largest.nbytes == tokens * tokens * 12 * 4
    assert not r.fits
    assert f"needs 47.98 GiB ({tokens * tokens * 48:,} B) in one allocation" in r.problems[0]


def test_upstream_flash_attention_padding_mask_is_quadratic_when_tokens_are_not_a_multiple_of_256(monkeypatch):
    monkeypatch.setenv("WANPY_FLASH_ATTN_PAD_KV", "1")  # sd.cpp's own graph, without wanpy's patch 0001
    r = wanpy.preflight("wan2.x-t2v-14b", width=832, height=480, num_frames=161, flash_attention=True,
                        vae_tiling=True, max_allocation=0xFFFFFFFC)
    tokens = 52 * 30 * 41
    assert r.largest.shape == (tokens + (-tokens) % 256, tokens) and r.largest.dtype == "f32"
    assert not r.fits


def test_vae_tiling_bounds_the_decoder_im2col():
    plain = wanpy.preflight("wan2.1-t2v-1.3b", width=832, height=480, num_frames=81)
    tiled = wanpy.preflight("wan2.1-t2v-1.3b", width=832, height=480, num_frames=81, vae_tiling=True)
    def decode(r):
        return max(a.nbytes for a in r.allocations if a.phase == "VAE decode" and a.kind == "tensor")
    assert decode(plain) == 2592 * 832 * 480 * 4 * 2  # f16 im2col of the full frame
    assert decode(tiled) == 2592 * 256 * 256 * 4 * 2  # 32x32-latent tiles
    assert wanpy.preflight("wan2.1-t2v-1.3b", width=832, height=480, num_frames=81, vae_tiling=True,
                           tile_size=(16, 16)).params["tile_size"] == (16, 16)


def test_a14b_measures_both_experts_and_i2v_encodes_the_video():
    r = wanpy.preflight("wan2.2-i2v-a14b:q4_k", width=832, height=480, num_frames=81, init_image=True,
                        flash_attention=True, vae_tiling=True)
    phases = [p.phase for p in r.phases]
    assert phases == ["load", "VAE encode", "high-noise sampling", "sampling", "VAE decode"]
    weights = {a.component: a.buffer_total for a in r.allocations if a.kind == "weights buffer"}
    assert weights["high_noise_diffusion_model"] == weights["diffusion_model"] > 7 * 2**30
    clip = wanpy.preflight("wan2.1-i2v-14b", width=832, height=480, num_frames=81, init_image=True)
    assert "clip vision" in [p.phase for p in clip.phases]


def test_weights_follow_the_offload_and_vae_options():
    kw = dict(width=832, height=480, num_frames=81, flash_attention=True, vae_tiling=True, max_allocation="4GiB",
              total_memory="96GiB")
    base = wanpy.preflight("wan2.x-t2v-14b:q8_0", **kw)
    offload = wanpy.preflight("wan2.x-t2v-14b:q8_0", offload_to_cpu=True, **kw)
    assert base.phases[0].device > 14 * 2**30 and offload.phases[0].device == 0
    assert offload.phases[0].host == base.phases[0].device
    assert base.total_memory == 96 * 2**30


def test_text_to_video_loads_the_vae_without_its_encoder():
    def vae_weights(model: str) -> int:
        r = wanpy.preflight(model, width=64, height=64, num_frames=5, suggest=False)
        return next(a.buffer_total for a in r.allocations if a.component == "vae" and a.kind == "weights buffer")

    # the same Wan2.1 VAE: whole where sd.cpp may encode (I2V, VACE), decoder only for T2V (the grid
    # above checks both against what sd.cpp loads)
    whole = vae_weights("wan2.1-vace-1.3b")
    assert vae_weights("wan2.1-i2v-14b") == whole
    assert 0 < vae_weights("wan2.1-t2v-1.3b") < whole
    assert vae_weights("wan2.2-t2v-a14b") == vae_weights("wan2.1-t2v-1.3b")


def test_text_to_video_runs_from_a_vae_file_without_the_encoder(t2v, tmp_path):
    from safetensors.numpy import load_file, save_file

    whole = load_file(t2v.vae)
    decoder = {k: v for k, v in whole.items() if not k.startswith(("encoder.", "conv1."))}
    assert 0 < len(decoder) < len(whole)
    save_file(decoder, tmp_path / "vae-decoder.safetensors")
    run = dict(width=32, height=32, num_frames=5, steps=1, seed=3, progress=False)
    frames = []
    for vae in (t2v.vae, tmp_path / "vae-decoder.safetensors"):
        with wanpy.WanPipeline(t2v.diffusion_model, vae, n_threads=2, progress=False) as pipe:
            frames.append(pipe.generate_video("x", **run).frames)
    assert np.array_equal(frames[0], frames[1])  # the encoder was never loaded, nor needed


# --- 3. presets equal file headers ------------------------------------------------------------
def test_preset_and_file_headers_give_the_same_report(big):
    kw = dict(width=832, height=480, num_frames=81, flash_attention=True, max_allocation="4GiB")
    from_file = wanpy.preflight(big.diffusion_model, vae=big.vae, text_encoder=big.text_encoder, **kw)
    from_preset = wanpy.preflight("wan2.x-t2v-14b:q4_k", text_encoder="umt5-xxl:q4_k", **kw)
    def figures(r):
        return [(a.name, a.phase, a.nbytes, a.shape) for a in r.allocations]
    assert figures(from_file) == figures(from_preset)
    assert from_file.phases == from_preset.phases
    assert "text encoding" in [p.phase for p in from_file.phases]


def test_every_preset_is_measured():
    for name in PRESETS:
        r = wanpy.preflight(name, width=480 if "ti2v" not in name else 704, height=320, num_frames=5,
                            suggest=False)
        assert r.largest.nbytes > 0 and r.peak >= r.phases[0].device, name


def test_full_size_14b_file_is_measured(big):
    r = wanpy.preflight(big.diffusion_model, vae=big.vae, text_encoder=big.text_encoder, width=832, height=480,
                        num_frames=161, suggest=False)
    assert r.model.startswith("Wan2.x-T2V-14B")
    assert r.seconds < 5  # timed in bench/bench_preflight.py; this only guards against a hang


# --- 4. suggestions fit when applied ----------------------------------------------------------
def test_suggestions_fit_when_applied():
    kw = dict(width=832, height=480, num_frames=81, max_allocation="4GiB")
    r = wanpy.preflight("wan2.1-t2v-1.3b", **kw)
    assert not r.fits and r.suggestions
    fitting = [s for s in r.suggestions if s.endswith("and it fits")]
    assert fitting == ["flash_attention=True and vae_tiling=True: largest becomes 1.27 GiB and it fits"]
    assert wanpy.preflight("wan2.1-t2v-1.3b", flash_attention=True, vae_tiling=True, **kw).fits
    assert not wanpy.preflight("wan2.1-t2v-1.3b", flash_attention=True, **kw).fits

    # 161 frames fit since wanpy's flash-attention patch (0001), 321 since its feed-forward chunks
    # (0007): twice as many do not (the hidden state, f32 [tokens, 5120], is then the wall)
    r = wanpy.preflight("wan2.x-t2v-14b", width=832, height=480, num_frames=641, flash_attention=True,
                        vae_tiling=True, max_allocation=0xFFFFFFFC)
    frames = next(s for s in r.suggestions if "frames fit" in s)
    n = int(re.search(r"at most (\d+) frames", frames).group(1))
    common = dict(width=832, height=480, flash_attention=True, vae_tiling=True, max_allocation=0xFFFFFFFC)
    assert wanpy.preflight("wan2.x-t2v-14b", num_frames=n, **common).fits
    assert not wanpy.preflight("wan2.x-t2v-14b", num_frames=n + 4, **common).fits
    size = next(s for s in r.suggestions if "fits (same aspect)" in s)
    w, h = map(int, re.search(r"at most (\d+)x(\d+)", size).groups())
    assert (n, w, h) == (533, 752, 432)
    assert r.largest.name == "diffusion_model mul_mat f32 [251160, 5120]"
    common = dict(num_frames=641, flash_attention=True, vae_tiling=True, max_allocation=0xFFFFFFFC)
    assert wanpy.preflight("wan2.x-t2v-14b", width=w, height=h, **common).fits
    assert not wanpy.preflight("wan2.x-t2v-14b", width=w + 16, height=h + 16, **common).fits
    assert "a HIP, CUDA or CPU build has no per-allocation ceiling" in r.suggestions


# --- 5. the pipeline refuses before loading or generating ---------------------------------------
@pytest.mark.slow
def test_pipeline_refuses_a_generation_that_does_not_fit_and_stays_usable(t2v):
    with wanpy.WanPipeline(t2v.diffusion_model, t2v.vae, n_threads=2) as pipe:
        ram = pipe.device.total_memory
        with pytest.raises(wanpy.AllocationTooLargeError) as info:
            pipe.generate_video("x", width=1280, height=720, num_frames=161, steps=1, progress=False)
        err = info.value
        assert isinstance(err, MemoryError) and isinstance(err, wanpy.WanpyError)
        assert err.limit == ram and err.required > ram
        assert err.allocation.phase == "sampling"
        assert "does not fit on CPU" in str(err) and "preflight=False skips this check" in str(err)
        assert any("at most" in s for s in err.suggestions)
        video = pipe.generate_video("x", width=64, height=64, num_frames=5, steps=1, seed=3, progress=False)
    assert video.frames.shape == (5, 64, 64, 3)
    assert video.params["preflight"]["fits"] is True
    assert video.params["preflight"]["largest_bytes"] > 0


def test_pipeline_refuses_weights_that_cannot_fit_before_reading_them(tmp_path):
    ram = wanpy.devices()[-1].total_memory
    if ram > 26 * 2**30:
        pytest.skip("this machine has room for 14B f16 weights")
    models = cached_model_set(variant="wan2.x-t2v-14b", dtype="f16", seed=0, sparse=True)
    with pytest.raises(wanpy.AllocationTooLargeError, match=r"load needs 2\d\.\d\d GiB of device memory"):
        wanpy.WanPipeline(models.diffusion_model, models.vae)


# --- 6. bad input -------------------------------------------------------------------------------
def test_bad_headers_and_names_raise_clear_errors(tmp_path, t2v):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(wanpy.ModelFileError):
        wanpy.preflight(bad, width=64, height=64, num_frames=5)
    with pytest.raises(wanpy.ModelFileError, match="is not a dit file"):
        wanpy.preflight(t2v.vae, width=64, height=64, num_frames=5)
    with pytest.raises(ValueError, match="neither a file nor a preset; presets: wan2.1-t2v-1.3b"):
        wanpy.preflight("wan3-t2v", width=64, height=64, num_frames=5)
    with pytest.raises(ValueError, match="unknown dtype 'q3_z'"):
        wanpy.preflight("wan2.x-t2v-14b:q3_z", width=64, height=64, num_frames=5)
    with pytest.raises(ValueError, match="use 157 or 161"):
        wanpy.preflight("wan2.x-t2v-14b", width=64, height=64, num_frames=160)
    with pytest.raises(ValueError, match="nearest: 480 or 512"):
        wanpy.preflight("wan2.2-ti2v-5b", width=500, height=704, num_frames=5)


def test_frame_counts_stop_at_the_longest_clip_sd_cpp_builds_graphs_for():
    # past them ggml aborts the process while building the VAE graph, in the pre-flight too
    with pytest.raises(ValueError, match="num_frames must be <= 201, got 205"):
        wanpy.preflight("wan2.1-i2v-14b", width=64, height=64, num_frames=205, init_image=True)
    with pytest.raises(ValueError, match="num_frames must be <= 657, got 661"):
        wanpy.preflight("wan2.2-ti2v-5b", width=64, height=64, num_frames=661)
    assert wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=689, suggest=False).fits


def test_a_video_larger_than_host_memory_is_refused_without_measuring(monkeypatch):
    # the measurement itself allocates zero-filled latents of the request's size (46 GB at
    # 16384x16384x689: MemoryError, or the OOM killer, before this check); sd.cpp could not hold
    # the decoded video anyway
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = wanpy.preflight("wan2.1-t2v-1.3b", width=16384, height=16384, num_frames=689, suggest=False)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: nothing big
    assert not report.fits
    host = [a for a in report.allocations if a.kind == "host buffer"]
    assert [(a.nbytes, a.on_device) for a in host] == [(15 * 16384 * 16384 * 689, False)]
    assert "of host memory (sd.cpp holds it as f32, then as uint8); this machine has" in report.problems[0]
    error = refusal(report)
    assert error.required == 15 * 16384 * 16384 * 689 and error.limit == system.host_memory()
    # the boundary: exactly the decoded video's size of memory measures the graphs, a byte less does not
    need = host_video_bytes(64, 64, 5)
    assert need == 15 * 64 * 64 * 5
    for memory, refused in ((need, False), (need - 1, True)):
        monkeypatch.setattr(system, "host_memory", lambda memory=memory: memory)
        small = wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5, suggest=False)
        assert any(a.kind == "host buffer" for a in small.allocations) is refused
        assert any(a.kind == "compute buffer" for a in small.allocations) is not refused
