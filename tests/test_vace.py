"""Wan VACE: the kit's VACE DiTs, identification, the strict control video, and generations on the random
Wan2.1-VACE-1.3B steered by it (the pre-flight's VACE buffers are checked in test_preflight's grid)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import wanpy
from wanpy.catalogue import DITS, FAMILIES
from wanpy.identify import identify_file
from wanpy.layouts import dit_layout
from wanpy.probe import read_frames
from wanpy.testing import cached_model_set, make_model_set, write_model_file

W, H, F = 32, 32, 5
TINY = dict(width=W, height=H, num_frames=F, steps=2, seed=3, progress=False)


def control(seed: int, frames: int = F, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


# --- the kit and identification ----------------------------------------------------------------
@pytest.mark.parametrize("variant,name,blocks", [("wan2.1-vace-1.3b", "Wan2.1-VACE-1.3B", 15),
                                                 ("wan2.1-vace-14b", "Wan2.x-VACE-14B", 8),
                                                 ("wan2.2-vace-fun-a14b", "Wan2.x-VACE-14B", 8)])
def test_kit_writes_vace_dits_that_identify_as_sdcpp_names_them(tmp_path, variant, name, blocks):
    models = make_model_set(tmp_path, variant=variant, sparse=True)
    kind = identify_file(models.diffusion_model)
    assert (kind.name, kind.vace_blocks, kind.problems) == (name, blocks, ())
    assert variant in kind.families
    assert (models.high_noise_diffusion_model is not None) == FAMILIES[variant].two_experts
    from wanpy.model_set import check_model_files, family_of_files

    assert family_of_files(check_model_files(**models.pipeline_kwargs())).name == variant


@pytest.mark.parametrize("vace_blocks,problem", [
    (7, "sd.cpp maps 8 VACE blocks (one every 4 blocks) and would crash reading vace_blocks.7"),
    (31, "steps by 30 // 31 = 0 and never ends"),
])
def test_vace_block_counts_that_crash_sdcpp_are_refused_before_loading(tmp_path, load_spy, vace_blocks, problem):
    import dataclasses

    shape = dataclasses.replace(DITS["Wan2.1-VACE-1.3B"], vace_blocks=vace_blocks, key="", sdcpp_name="")
    path = write_model_file(tmp_path / "vace.gguf", dit_layout(shape, "q4_0"), format="gguf", sparse=True)
    assert any(problem in p for p in identify_file(path).problems)
    vae = cached_model_set(variant="wan2.1-t2v-1.3b", sparse=True).vae
    with pytest.raises(wanpy.ModelFileError, match="never ends|would crash"):
        wanpy.WanPipeline(path, vae)
    assert load_spy == []


# --- strict requests ---------------------------------------------------------------------------
def vace_request(**options):
    return wanpy.build_request("wan2.1-vace-1.3b", "x", **{**dict(width=W, height=H, num_frames=F), **options})


@pytest.mark.parametrize("options,error,message", [
    ({"control_video": control(0, frames=4)}, ValueError, r"control_video has 4 frames but the video has 5"),
    ({"control_video": control(0, frames=9)}, ValueError, r"control_video has 9 frames but the video has 5"),
    ({"control_video": control(0, width=48)}, ValueError, r"control_video is 48x32 but the video is 32x32"),
    ({"control_video": control(0).astype(np.float32)}, ValueError, r"control_video: array dtype must be uint8, "
                                                                   r"got float32"),
    ({"control_video": control(0)[..., :1]}, ValueError, r"must be \(T, H, W, 3\) RGB frames, got shape"),
    ({"control_video": control(0)[0]}, ValueError, r"must be \(T, H, W, 3\) RGB frames, got shape \(32, 32, 3\)"),
    ({"control_video": [control(0)]}, TypeError, r"control_video must be a wanpy.Video, a uint8"),
    ({"vace_strength": float("nan")}, ValueError, r"vace_strength must be finite"),
    ({"vace_strength": -0.5}, ValueError, r"vace_strength"),
    ({"vace_strength": "1"}, TypeError, r"vace_strength"),
    ({"reference_image": np.zeros((16, 32, 3), np.uint8)}, ValueError, r"reference_image is 32x16 but the video is "
                                                                       r"32x32"),
    ({"init_image": np.zeros((32, 32, 3), np.uint8)}, ValueError, r"takes an image as reference_image"),
])
def test_a_control_video_or_strength_that_does_not_match_is_an_error_naming_both(options, error, message):
    with pytest.raises(error, match=message):
        vace_request(**options)


@pytest.mark.parametrize("option", ["control_video", "vace_strength", "reference_image"])
def test_vace_options_are_refused_for_other_families(option):
    value = {"control_video": control(0), "vace_strength": 1.0, "reference_image": np.zeros((H, W, 3), np.uint8)}
    with pytest.raises(ValueError, match=f"{option}: Wan VACE models only .*wan2.1-vace-1.3b"):
        wanpy.build_request("wan2.1-t2v-1.3b", "x", width=W, height=H, num_frames=F, **{option: value[option]})


def test_a_control_video_file_is_decoded_and_must_match_too(tmp_path):
    path = wanpy.save_video(tmp_path / "control.webm", control(1), fps=16)
    r = vace_request(control_video=path)
    assert r.control_video.shape == (F, H, W, 3) and r.control_video.dtype == np.uint8
    assert r.to_dict()["control_video"] == str(path)
    with pytest.raises(ValueError, match=r"control_video has 5 frames but the video has 9"):
        vace_request(control_video=path, num_frames=9)
    (tmp_path / "empty.webm").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        vace_request(control_video=tmp_path / "empty.webm")


def test_the_request_records_the_control_video_strength_and_reference():
    r = vace_request(control_video=control(0), vace_strength=0.5, reference_image=np.zeros((H, W, 3), np.uint8))
    assert (r.to_dict()["control_video"], r.to_dict()["vace_strength"], r.to_dict()["reference_image"]) == \
        ("array", 0.5, "given")
    assert vace_request().to_dict()["vace_strength"] == 1.0  # sd.cpp's default, recorded
    assert "control_video" not in wanpy.build_request("wan2.1-t2v-1.3b", "x").to_dict()


# --- generations on the random Wan2.1-VACE-1.3B ---------------------------------------------------
@pytest.fixture(scope="module")
def vace():
    models = cached_model_set(variant="wan2.1-vace-1.3b", dtype="q4_0", seed=0)
    with wanpy.WanPipeline(models.diffusion_model, models.vae, n_threads=2, progress=False) as pipe:
        yield pipe


@pytest.mark.slow
def test_the_control_video_steers_the_frames_and_strength_zero_removes_it(vace):
    without = vace.generate_video("x", **TINY).frames
    steered = vace.generate_video("x", control_video=control(0), **TINY)
    again = vace.generate_video("x", control_video=control(0), **TINY).frames
    other = vace.generate_video("x", control_video=control(1), **TINY).frames
    assert steered.frames.shape == (F, H, W, 3)
    assert np.array_equal(steered.frames, again)  # deterministic
    assert not np.array_equal(steered.frames, without) and not np.array_equal(steered.frames, other)
    assert steered.params["control_video"] == "array" and steered.params["vace_strength"] == 1.0
    # vace_strength scales every VACE block's contribution: at 0 the control video cannot matter
    off = [vace.generate_video("x", control_video=control(s), vace_strength=0.0, **TINY).frames for s in (0, 1)]
    assert np.array_equal(off[0], off[1])
    assert not np.array_equal(off[0], steered.frames)


@pytest.mark.slow
def test_a_reference_image_changes_the_frames_and_keeps_the_frame_count(vace):
    plain = vace.generate_video("x", control_video=control(0), **TINY).frames
    image = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
    video = vace.generate_video("x", control_video=control(0), reference_image=image, **TINY)
    assert video.frames.shape == (F, H, W, 3)  # sd.cpp samples the reference's latent and drops it
    assert not np.array_equal(video.frames, plain)
    assert video.params["reference_image"] == "given"


@pytest.mark.slow
def test_a_video_file_a_video_and_its_frames_steer_alike(vace, tmp_path):
    path = wanpy.save_video(tmp_path / "control.webm", control(2), fps=16)
    from_file = vace.generate_video("x", control_video=path, **TINY)
    decoded = read_frames(path)
    from_array = vace.generate_video("x", control_video=decoded, **TINY).frames
    from_video = vace.generate_video("x", control_video=from_file, **TINY).frames  # a Video steers with its frames
    assert np.array_equal(from_file.frames, from_array)
    assert from_video.shape == (F, H, W, 3)


@pytest.mark.slow
def test_cli_generates_from_a_control_video_file(tmp_path):
    models = cached_model_set(variant="wan2.1-vace-1.3b", dtype="q4_0", seed=0)
    control_path = wanpy.save_video(tmp_path / "control.webm", control(3), fps=16)
    out = tmp_path / "out.webm"
    args = [sys.executable, "-m", "wanpy", "generate", "--json", "--diffusion-model", str(models.diffusion_model),
            "--vae", str(models.vae), "--prompt", "x", "--size", f"{W}x{H}", "--frames", str(F), "--steps", "2",
            "--seed", "3", "--threads", "2", "--no-progress", "--control-video", str(control_path),
            "--vace-strength", "0.75", "-o", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert wanpy.probe_video(out).frame_count == F
    record = json.loads(result.stdout)
    assert record["params"]["vace_strength"] == 0.75
    wrong = subprocess.run([*args[:-2], "--frames", "9", "-o", str(tmp_path / "no.webm")], capture_output=True,
                           text=True, timeout=900)
    assert wrong.returncode == 2 and "control_video has 5 frames but the video has 9" in wrong.stderr
    assert not (tmp_path / "no.webm").exists()


def test_sd_server_control_frames_become_the_control_video():
    pytest.importorskip("pydantic")
    import base64

    from wanpy.display import png_bytes
    from wanpy.serve.schemas import FieldError, SdcppVidGen

    frames = control(4)
    body = SdcppVidGen(prompt="x", vace_strength=0.5,
                       control_frames=[base64.b64encode(png_bytes(f)).decode() for f in frames])
    options = body.to_options()
    assert np.array_equal(options["control_video"], frames) and options["vace_strength"] == 0.5
    mixed = [base64.b64encode(png_bytes(f)).decode() for f in (frames[0], control(5, width=48)[0])]
    with pytest.raises(FieldError, match=r"control_frames\[1\]"):
        SdcppVidGen(prompt="x", control_frames=mixed).to_options()


def test_a_rotated_control_video_file_is_decoded_as_players_show_it(tmp_path):
    from wanpy.probe import ffmpeg_exe, read_frames

    stored = wanpy.save_video(tmp_path / "stored.mp4", control(6, width=48), fps=16)  # 48x32 as stored
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", "90", "-i", str(stored), "-c", "copy",
                    str(rotated)], check=True)
    frames = read_frames(rotated)
    assert frames.shape == (F, 48, 32, 3)  # shown upright: 32 wide, 48 high, every frame whole
    assert np.array_equal(frames, np.rot90(read_frames(stored), k=1, axes=(1, 2)))
    r = wanpy.build_request("wan2.1-vace-1.3b", "x", width=32, height=48, num_frames=F, control_video=rotated)
    assert r.control_video.shape == (F, 48, 32, 3)
