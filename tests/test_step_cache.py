"""Step caching (wanpy.StepCache): strict values before loading, the engine's own evaluation
counts, a cache that never skips gives the uncached frames; load settings mmap and
vae_conv_direct."""

from __future__ import annotations

import math

import numpy as np
import pytest

import wanpy
from wanpy.cache import parse_cache_options
from wanpy.cli import main
from wanpy.testing import cached_model_set


@pytest.fixture(scope="module")
def t2v():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


@pytest.fixture(scope="module")
def pipe(t2v):
    with wanpy.WanPipeline(**t2v.pipeline_kwargs(), n_threads=2, progress=False) as p:
        yield p


TINY = dict(width=32, height=32, num_frames=1, steps=8, seed=5, progress=False)


@pytest.fixture(scope="module")
def plain(pipe):
    """The uncached generation every cached one is compared with."""
    return pipe.generate_video("x", **TINY)


# --- values, before anything loads ------------------------------------------------------------
def test_a_mode_holds_the_engines_defaults_and_only_its_own_fields():
    c = wanpy.StepCache("easycache")
    assert c.to_dict() == {"mode": "easycache", "reuse_threshold": 0.2, "start_percent": 0.15, "end_percent": 0.95}
    assert c.residual_diff_threshold is None and c.spectrum_w is None
    s = wanpy.StepCache("spectrum", spectrum_window_size=3)
    assert s.to_dict() == {"mode": "spectrum", "spectrum_w": 0.4, "spectrum_m": 3, "spectrum_lam": 1.0,
                           "spectrum_window_size": 3, "spectrum_flex_window": 0.5, "spectrum_warmup_steps": 4,
                           "spectrum_stop_percent": 0.9}
    native = wanpy.StepCache("cache-dit", residual_diff_threshold=0.1, fn_compute_blocks=4).to_native()
    assert (native.mode, native.Fn_compute_blocks, native.Bn_compute_blocks) == ("cache-dit", 4, 0)
    assert math.isclose(native.residual_diff_threshold, 0.1, rel_tol=1e-6)
    assert repr(c) == "StepCache(mode='easycache', reuse_threshold=0.2, start_percent=0.15, end_percent=0.95)"


@pytest.mark.parametrize("kwargs,error,match", [
    ({"mode": "turbo"}, ValueError, r"cache mode 'turbo' is not one of: easycache, dbcache, taylorseer"),
    ({"mode": "ucache"}, ValueError, r"UNet models only .* runs a Wan model uncached"),
    ({"mode": "disabled"}, ValueError, r"pass cache=None"),
    ({"mode": "easycache", "spectrum_w": 0.5}, ValueError,
     r"spectrum_w is read by mode 'spectrum' only; mode 'easycache' reads reuse_threshold, start_percent, "
     r"end_percent"),
    ({"mode": "dbcache", "reuse_threshold": 0.1}, ValueError, r"reuse_threshold is read by mode 'easycache' only"),
    ({"mode": "easycache", "reuse_threshold": float("nan")}, ValueError, r"reuse_threshold must be finite"),
    ({"mode": "easycache", "reuse_threshold": -0.1}, ValueError, r"reuse_threshold must be >= 0"),
    ({"mode": "easycache", "start_percent": 0.5, "end_percent": 0.4}, ValueError,
     r"start_percent \(0.5\) must be below end_percent \(0.4\); sd.cpp would switch the cache off"),
    ({"mode": "easycache", "end_percent": 1.5}, ValueError, r"end_percent must be <= 1"),
    ({"mode": "easycache", "start_percent": 1}, ValueError, r"start_percent must be < 1"),
    ({"mode": "dbcache", "fn_compute_blocks": 59}, ValueError, r"fn_compute_blocks must be <= 58"),
    ({"mode": "dbcache", "bn_compute_blocks": 2.0}, TypeError, r"bn_compute_blocks must be an integer"),
    ({"mode": "spectrum", "spectrum_m": -1}, ValueError, r"spectrum_m must be >= 0"),
    ({"mode": "spectrum", "spectrum_window_size": 0}, ValueError, r"spectrum_window_size must be >= 1"),
    ({"mode": "spectrum", "spectrum_stop_percent": 0}, ValueError, r"spectrum_stop_percent must be > 0"),
    ({"mode": "spectrum", "spectrum_w": True}, TypeError, r"spectrum_w must be a number"),
])
def test_bad_cache_values_are_refused_naming_what_is_valid(kwargs, error, match):
    with pytest.raises(error, match=match):
        wanpy.StepCache(**kwargs)


def test_the_cache_option_takes_a_mode_name_or_a_stepcache(t2v, load_spy):
    r = wanpy.build_request("wan2.1-t2v-1.3b", "x", cache="dbcache", **{k: v for k, v in TINY.items()
                                                                        if k != "progress"})
    assert r.cache == wanpy.StepCache("dbcache")
    assert r.to_dict()["cache"] == {"mode": "dbcache", "residual_diff_threshold": 0.08, "fn_compute_blocks": 8,
                                    "bn_compute_blocks": 0}
    with pytest.raises(TypeError, match="cache must be None, a mode name"):
        wanpy.build_request("wan2.1-t2v-1.3b", "x", cache=0.2)
    with pytest.raises(ValueError, match="cache mode 'spectral' is not one of"):
        wanpy.generate_video("x", **t2v.pipeline_kwargs(), cache="spectral")
    assert load_spy == []


def test_sd_cli_keys_map_to_the_modes_fields_and_inert_ones_are_refused():
    assert parse_cache_options("easycache", {"threshold": "0.3", "start": "0.2"}) == wanpy.StepCache(
        "easycache", reuse_threshold=0.3, start_percent=0.2)
    assert parse_cache_options("dbcache", {"threshold": "0.05", "Fn": "4"}) == wanpy.StepCache(
        "dbcache", residual_diff_threshold=0.05, fn_compute_blocks=4)
    assert parse_cache_options("spectrum", {"warmup": "2", "w": "0.5"}) == wanpy.StepCache(
        "spectrum", spectrum_warmup_steps=2, spectrum_w=0.5)
    with pytest.raises(ValueError, match=r"'warmup' \(max_warmup_steps\): .* counts it down without acting on it"):
        parse_cache_options("dbcache", {"warmup": "3"})
    with pytest.raises(ValueError, match=r"'scm_mask' .* never consults it"):
        parse_cache_options("cache-dit", {"scm_mask": "1,0,1"})
    with pytest.raises(ValueError, match=r"cache option m='x': spectrum_m takes an integer"):
        parse_cache_options("spectrum", {"m": "x"})


def test_cli_refuses_bad_cache_options_before_loading(t2v, capsys, load_spy):
    base = ["generate", "--diffusion-model", str(t2v.diffusion_model), "--vae", str(t2v.vae), "--prompt", "x",
            "-o", "/tmp/never-written.webm"]
    assert main([*base, "--cache", "easycache", "--cache-option", "start=0.9", "--cache-option", "end=0.5"]) == 2
    assert "start_percent (0.9) must be below end_percent (0.5)" in capsys.readouterr().err
    assert main([*base, "--cache-option", "threshold=0.1"]) == 2
    assert "--cache-option needs --cache MODE" in capsys.readouterr().err
    assert main([*base, "--cache", "easycache", "--cache-option", "threshold=0.1",
                 "--cache-option", "threshold=0.2"]) == 2
    assert "threshold given more than once" in capsys.readouterr().err
    assert load_spy == []


def test_load_settings_are_checked_and_diffusion_conv_direct_is_refused_for_wan(t2v, load_spy):
    with pytest.raises(TypeError, match="mmap must be True or False"):
        wanpy.WanPipeline(**t2v.pipeline_kwargs(), mmap=1)
    with pytest.raises(TypeError, match="vae_conv_direct must be True or False"):
        wanpy.generate_video("x", **t2v.pipeline_kwargs(), vae_conv_direct="yes")
    with pytest.raises(ValueError, match=r"UNet diffusion models only .* vae_conv_direct=True applies them"):
        wanpy.WanPipeline(**t2v.pipeline_kwargs(), diffusion_conv_direct=True)
    with pytest.raises(TypeError, match="'mmap', a setting fixed when the weights load"):
        wanpy.build_request("wan2.1-t2v-1.3b", "x", mmap=True)
    assert load_spy == []


# --- generations ----------------------------------------------------------------------------------
def test_without_a_cache_every_step_evaluates_the_model_once_per_condition(pipe, plain):
    video = plain  # cfg 5: cond and uncond each step
    assert (video.model_evaluations, video.cached_evaluations) == (16, 0)
    assert video.params["evaluations"] == {"sampling": {"computed": 16, "cached": 0}}
    one = pipe.generate_video("x", **{**TINY, "cfg_scale": 1.0})
    assert (one.model_evaluations, one.cached_evaluations) == (8, 0)


@pytest.mark.parametrize("cache", [wanpy.StepCache("easycache", reuse_threshold=0),
                                   wanpy.StepCache("dbcache", residual_diff_threshold=0)])
def test_a_cache_that_never_skips_gives_the_uncached_frames(pipe, plain, cache):
    cached = pipe.generate_video("x", cache=cache, **TINY)
    assert (cached.model_evaluations, cached.cached_evaluations) == (16, 0)
    np.testing.assert_array_equal(cached.frames, plain.frames)
    assert cached.request is not None and cached.request.cache == cache
    assert cached.params["cache"] == cache.to_dict()


def test_spectrum_replaces_the_evaluations_of_the_steps_it_predicts(pipe, plain):
    # 8 steps, defaults: warm-up 4, window 2 growing by 0.5, stop at 90%: computes steps 1-4, 6, 8 and
    # predicts 5 and 7 (sd.cpp's spectrum.hpp), each a step of two evaluations
    video = pipe.generate_video("x", cache="spectrum", **TINY)
    assert (video.model_evaluations, video.cached_evaluations) == (12, 4)
    assert not np.array_equal(video.frames, plain.frames)


def test_a_skipping_threshold_serves_evaluations_from_the_cache(pipe):
    video = pipe.generate_video("x", cache=wanpy.StepCache("easycache", reuse_threshold=1e6), **TINY)
    # every step inside the window after the two that calibrate it is served: never the first ones
    assert video.model_evaluations + video.cached_evaluations == 16
    assert 0 < video.cached_evaluations < 16
    assert video.cached_evaluations % 2 == 0  # a served step serves cond and uncond together


def test_mmap_and_direct_convolutions_load_and_record(t2v, plain):
    ref = plain.frames
    with wanpy.WanPipeline(**t2v.pipeline_kwargs(), n_threads=2, progress=False, mmap=True,
                           vae_conv_direct=True) as p:
        video = p.generate_video("x", **TINY)
    assert video.params["mmap"] is True and video.params["vae_conv_direct"] is True
    assert video.frames.shape == ref.shape
    # the same weights, the same DiT: only the VAE's convolution kernels differ (float rounding)
    assert np.abs(video.frames.astype(int) - ref.astype(int)).max() <= 2


# --- what a cache keeps, in the pre-flight --------------------------------------------------------
@pytest.mark.parametrize("cache,conditions,copies", [
    ("easycache", 2, 4), ("easycache", 1, 3),  # a change per condition + the anchor's input and output
    ("dbcache", 2, 6), ("dbcache", 1, 3),  # input, output and change per condition
    ("taylorseer", 2, 10), ("cache-dit", 1, 7),  # + two sets of order-2 derivatives for the anchor
    ("spectrum", 2, 7), (wanpy.StepCache("spectrum", spectrum_m=9), 1, 11),  # max(m + 1, 6) kept, +1 trimming
])
def test_host_copies_follow_the_engines_buffers(cache, conditions, copies):
    c = cache if isinstance(cache, wanpy.StepCache) else wanpy.StepCache(cache)
    assert c.host_copies(conditions) == copies
    with pytest.raises(ValueError, match="conditions must be 1 or 2"):
        c.host_copies(3)


def test_the_preflight_counts_what_a_cache_keeps_in_host_memory():
    size = dict(width=832, height=480, num_frames=81, suggest=False)
    latent = 104 * 60 * 21 * 16 * 4  # Wan2.1's f32 latent at 832x480x81: 8.4 MB
    gpu = dict(max_allocation="4GiB", total_memory="24GiB")  # a modelled GPU: the cache is host memory
    plain = wanpy.preflight("wan2.1-t2v-1.3b", **size, **gpu)
    cached = wanpy.preflight("wan2.1-t2v-1.3b", **size, **gpu, cache="easycache")
    unguided = wanpy.preflight("wan2.1-t2v-1.3b", **size, **gpu, cache="easycache", cfg_scale=1.0)
    host = [{p.phase: p.host for p in r.phases} for r in (plain, cached, unguided)]
    assert host[1]["sampling"] - host[0]["sampling"] == 4 * latent
    assert host[2]["sampling"] - host[0]["sampling"] == 3 * latent
    assert host[1]["VAE decode"] == host[0]["VAE decode"]  # freed when sampling returns
    assert [p.device for p in cached.phases] == [p.device for p in plain.phases]
    kept = [a for a in cached.allocations if a.kind == "cache copies"]
    assert [(a.phase, a.nbytes, a.on_device) for a in kept] == [("sampling", 4 * latent, False)]
    assert "step cache: 4 f32 copies of the latent" in str(cached)
    assert cached.params["cache_copies"] == 4
    # on the CPU the latent copies share the memory the model samples in
    cpu_plain = wanpy.preflight("wan2.1-t2v-1.3b", **size)
    cpu = wanpy.preflight("wan2.1-t2v-1.3b", **size, cache="dbcache")
    assert ({p.phase: p.device for p in cpu.phases}["sampling"]
            - {p.phase: p.device for p in cpu_plain.phases}["sampling"]) == 6 * latent


def test_each_a14b_expert_pass_holds_its_own_cache_one_at_a_time():
    r = wanpy.preflight("wan2.2-t2v-a14b:q4_k", width=832, height=480, num_frames=81, cache="spectrum",
                        max_allocation="4GiB", total_memory="24GiB", suggest=False)
    kept = [(a.phase, a.nbytes) for a in r.allocations if a.kind == "cache copies"]
    assert kept == [("high-noise sampling", 7 * 104 * 60 * 21 * 16 * 4), ("sampling", 7 * 104 * 60 * 21 * 16 * 4)]
    # sd.cpp guides the high-noise pass only when both cfgs are not 1: one condition cached there
    r = wanpy.preflight("wan2.2-t2v-a14b:q4_k", width=832, height=480, num_frames=81, cache="dbcache",
                        high_noise_cfg_scale=1.0, max_allocation="4GiB", total_memory="24GiB", suggest=False)
    kept = [(a.phase, a.nbytes) for a in r.allocations if a.kind == "cache copies"]
    assert kept == [("high-noise sampling", 3 * 104 * 60 * 21 * 16 * 4), ("sampling", 6 * 104 * 60 * 21 * 16 * 4)]
    assert (r.params["high_noise_cache_copies"], r.params["cache_copies"]) == (3, 6)


def test_a_pipeline_preflight_counts_the_requests_cache(pipe):
    options = {k: v for k, v in TINY.items() if k != "progress"}
    request = wanpy.build_request(pipe.family, "x", cache="cache-dit", cfg_scale=1.0, **options)
    report = pipe.check_fits(request)
    assert [a.nbytes for a in report.allocations if a.kind == "cache copies"] == [7 * 4 * 4 * 1 * 16 * 4]
    with pytest.raises(ValueError, match="cache mode 'ucache'"):
        wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5, cache="ucache")


def test_cli_preflight_counts_the_cache(capsys):
    rc = main(["preflight", "wan2.1-t2v-1.3b", "--size", "832x480", "--frames", "81", "--total-memory", "100GiB",
               "--cache", "dbcache", "--cache-option", "threshold=0.1", "--cfg-scale", "1"])
    assert rc == 0
    assert "step cache: 3 f32 copies of the latent" in capsys.readouterr().out
    assert main(["preflight", "wan2.1-t2v-1.3b", "--size", "64x64", "--frames", "5", "--cache", "ucache"]) == 2
    assert "ucache" in capsys.readouterr().err
    assert main(["preflight", "wan2.1-t2v-1.3b", "--size", "64x64", "--frames", "5", "--cfg-scale", "1"]) == 2
    assert "only with --cache" in capsys.readouterr().err
