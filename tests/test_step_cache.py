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
