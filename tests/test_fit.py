"""fit="auto": the cheapest settings that fit, chosen by the pre-flight, never a smaller video."""

from __future__ import annotations

import pytest

import wanpy
from wanpy.memory import choose_fit
from wanpy.testing import cached_model_set

from conftest import run_python

FOUR_GIB = 0xFFFFFFFC  # what the users' Vulkan driver allows per allocation
GiB = 2**30


def test_the_14b_at_161_frames_gets_flash_attention_and_tiling_on_a_4gib_device():
    choice = choose_fit("wan2.x-t2v-14b", width=832, height=480, num_frames=161, max_allocation=FOUR_GIB)
    assert choice.changed == {"flash_attention": (False, True), "vae_tiling": (False, True)}
    assert choice.settings == {"flash_attention": True, "vae_tiling": True, "tile_size": None,
                               "keep_vae_on_cpu": False, "offload_to_cpu": False, "max_vram": None}
    report = choice.report
    assert report.fits and report.largest.nbytes <= FOUR_GIB
    # the request itself is untouched
    assert (report.params["width"], report.params["height"], report.params["num_frames"]) == (832, 480, 161)
    # cheaper sets do not fit: as asked, flash attention alone, tiling alone
    for cheaper in ({}, {"flash_attention": True}, {"vae_tiling": True}):
        assert not wanpy.preflight("wan2.x-t2v-14b", width=832, height=480, num_frames=161,
                                   max_allocation=FOUR_GIB, suggest=False, **cheaper).fits
    assert choice.as_params() == {"mode": "auto", "tried": choice.tried, "changed": {
        "flash_attention": {"asked": False, "chosen": True}, "vae_tiling": {"asked": False, "chosen": True}}}


def test_settings_already_on_stay_on_and_a_fitting_request_is_unchanged():
    choice = choose_fit("wan2.1-t2v-1.3b", width=832, height=480, num_frames=33, flash_attention=True,
                        vae_tiling=True, max_allocation=FOUR_GIB)
    assert choice.changed == {} and choice.tried == 1
    assert choice.settings["flash_attention"] and choice.settings["vae_tiling"]


def test_a_smaller_tile_is_chosen_when_the_default_tile_does_not_fit():
    choice = choose_fit("wan2.1-t2v-1.3b", width=832, height=480, num_frames=33, max_allocation=GiB)
    (n, m) = choice.settings["tile_size"]
    assert n == m and 4 <= n < 32
    assert choice.changed["flash_attention"] == (False, True)
    common = dict(width=832, height=480, num_frames=33, flash_attention=True, vae_tiling=True,
                  max_allocation=GiB, suggest=False)
    assert wanpy.preflight("wan2.1-t2v-1.3b", tile_size=(n, n), **common).fits
    assert not wanpy.preflight("wan2.1-t2v-1.3b", tile_size=(n + 1, n + 1), **common).fits
    assert not wanpy.preflight("wan2.1-t2v-1.3b", **common).fits  # sd.cpp's default tile (32)


def test_a_given_tile_size_is_kept():
    # the caller's tile does not fit on the device: the VAE goes to the CPU instead
    choice = choose_fit("wan2.1-t2v-1.3b", width=832, height=480, num_frames=33, max_allocation=GiB,
                        tile_size=(32, 32))
    assert choice.settings["tile_size"] == (32, 32)
    assert choice.changed["keep_vae_on_cpu"] == (False, True)
    vae = [a for a in choice.report.allocations if a.component == "vae"]
    assert vae and not any(a.on_device for a in vae)


def test_device_memory_brings_the_vae_to_the_cpu_or_offloading():
    kwargs = dict(width=832, height=480, num_frames=81, max_allocation=FOUR_GIB)
    roomy = choose_fit("wan2.x-t2v-14b:q4_k", total_memory=64 * GiB, **kwargs)
    assert set(roomy.changed) == {"flash_attention", "vae_tiling"}
    peak = roomy.report.peak
    tight = choose_fit("wan2.x-t2v-14b:q4_k", total_memory=peak - 1, **kwargs)
    assert set(tight.changed) - {"flash_attention", "vae_tiling", "tile_size"} <= {"keep_vae_on_cpu", "offload_to_cpu"}
    assert set(tight.changed) & {"keep_vae_on_cpu", "offload_to_cpu"}
    assert tight.report.fits and tight.report.peak <= peak - 1


def test_nothing_fits_is_refused_with_the_frames_and_sizes_that_would():
    with pytest.raises(wanpy.AllocationTooLargeError) as info:
        choose_fit("wan2.x-t2v-14b", width=832, height=480, num_frames=161, max_allocation=GiB)
    err = info.value
    assert err.limit == GiB and err.required > GiB
    assert any(s.startswith("at 832x480 at most ") for s in err.suggestions)
    assert any(s.startswith("at 161 frames at most ") for s in err.suggestions)


def test_preflight_suggestions_name_what_auto_would_choose():
    report = wanpy.preflight("wan2.x-t2v-14b", width=832, height=480, num_frames=161, max_allocation=FOUR_GIB)
    assert report.suggestions[0] == ("fit='auto' would choose flash_attention=True, vae_tiling=True: "
                                     "the cheapest settings that fit")


# --- the pipeline, the one-shot function and the command line --------------------------------
@pytest.fixture(scope="module")
def t2v():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


def test_pipeline_records_the_fit_mode(t2v):
    small = dict(width=32, height=32, num_frames=1, steps=1, seed=3, progress=False)
    with wanpy.WanPipeline(t2v.diffusion_model, t2v.vae, n_threads=2) as pipe:
        strict = pipe.generate_video("a fox", **small)
        auto = pipe.generate_video("a fox", fit="auto", **small)
        with pytest.raises(ValueError, match="fit must be one of 'strict', 'auto'"):
            pipe.generate_video("a fox", fit="loose", **small)
        with pytest.raises(ValueError, match="preflight=False"):
            pipe.generate_video("a fox", fit="auto", preflight=False, **small)
    assert strict.params["fit"] == "strict"
    # on the CPU nothing has a per-allocation ceiling: it fits as asked, and says so
    assert auto.params["fit"] == {"mode": "auto", "changed": {}, "tried": 1}
    assert (auto.frames == strict.frames).all()


def test_generate_command_takes_fit_auto(t2v, tmp_path):
    out = tmp_path / "fox.webm"
    args = ["generate", "--diffusion-model", str(t2v.diffusion_model), "--vae", str(t2v.vae), "--prompt", "fox",
            "--size", "32x32", "--frames", "1", "--steps", "1", "--threads", "2", "--fit", "auto", "--no-progress",
            "-o", str(out)]
    result = run_python(f"import sys; from wanpy.cli import main; sys.exit(main({args!r}))")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fit auto: fits as asked" in result.stdout
    assert out.exists()
