"""GenerationRequest: every value checked without model files, and nothing loaded before a refusal.

The spy replaces ``wanpy._core.Context`` (the only way sd.cpp loads weights): a refusal that came
after a load would show up as a call to it.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import wanpy
from wanpy.cli import main
from wanpy.request import build_request
from wanpy.testing import make_lora, make_model_set

A14B = "wan2.2-t2v-a14b"


@pytest.fixture(scope="module")
def a14b(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # full-size 14B headers, data regions are holes: identification reads headers only
    return make_model_set(tmp_path_factory.mktemp("a14b"), variant=A14B, dtype="q4_0", sparse=True)


def test_defaults_are_the_family_published_ones() -> None:
    r = build_request(A14B, "a fox")
    assert (r.width, r.height, r.num_frames, r.fps, r.steps) == (1280, 720, 81, Fraction(16), 40)
    assert r.high_noise is not None and r.high_noise.moe_boundary == 0.875 and r.high_noise.steps is None
    assert r.seed is None and r.loras == ()


def test_to_dict_is_json() -> None:
    r = build_request("wan2.1-t2v-1.3b", "a fox", fps=Fraction(30000, 1001), num_frames=5, seed=3)
    record = json.loads(json.dumps(r.to_dict()))
    assert record["fps"] == "30000/1001" and record["num_frames"] == 5 and record["family"] == "wan2.1-t2v-1.3b"


BAD_VALUES = [
    ({"width": 17, "height": 64}, ValueError, r"width 17 \(nearest: 16 or 32\)"),
    ({"num_frames": 160}, ValueError, r"use 157 or 161"),
    ({"num_frames": "5"}, TypeError, r"num_frames must be an integer"),
    ({"steps": 0}, ValueError, r"steps must be >= 1"),
    ({"sample_method": "nope"}, ValueError, r"sample_method 'nope' is not one of"),
    ({"scheduler": "ays"}, ValueError, r"scheduler 'ays' has no schedule for Wan"),
    ({"cfg_scale": 10**400}, ValueError, r"cfg_scale is too large"),
    ({"fps": float("inf")}, ValueError, r"fps must be a finite number"),
    ({"align": "sideways", "num_frames": 5}, ValueError, r"align must be 'down', 'up' or None"),
    ({"vae_tiling": "yes"}, TypeError, r"vae_tiling must be True or False"),
    ({"tile_size": (16, 16)}, ValueError, r"tile_size=\(16, 16\) needs vae_tiling=True"),
    ({"vae_tiling": True, "tile_size": (2, 2)}, ValueError, r"tile_size\[0\] must be >= 4"),
    ({"vae_tiling": True, "tile_size": (200, 16)}, ValueError, r"tile_size\[0\] must be <= 160"),
    ({"vae_tiling": True, "tile_overlap": 0.9}, ValueError, r"tile_overlap must be <= 0.5"),
    ({"loras": None}, TypeError, r"loras must be a list"),
    ({"loras": [("/no/such/lora.safetensors", 1.0)]}, FileNotFoundError, r"loras\[0\]: no such file"),
    ({"init_image": np.zeros((720, 1280, 3), np.uint8)}, ValueError, r"text-to-video: it takes no init_image"),
    ({"fit": "maybe"}, ValueError, r"fit must be one of 'strict', 'auto'"),
    ({"fit": "auto", "preflight": False}, ValueError, r"cannot run with preflight=False"),
    ({"high_noise_steps": 0}, ValueError, r"high_noise_steps must be >= 1"),
    ({"flash_attention": True}, TypeError, r"'flash_attention', a setting fixed when the weights load"),
    ({"num_frame": 5}, TypeError, r"unexpected keyword argument 'num_frame'"),
]


@pytest.mark.parametrize("options, error, message", BAD_VALUES, ids=[str(v[0])[:40] for v in BAD_VALUES])
def test_bad_value_refused_without_models(options: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build_request(A14B, "a fox", **options)


@pytest.mark.parametrize("options, error, message", BAD_VALUES[:8] + BAD_VALUES[15:17],
                         ids=[str(v[0])[:40] for v in BAD_VALUES[:8] + BAD_VALUES[15:17]])
def test_one_shot_refuses_before_loading(a14b: Any, load_spy: list[Any], tmp_path: Path,
                                         options: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        wanpy.generate_video("a fox", **a14b.pipeline_kwargs(), output=tmp_path / "out.webm", **options)
    assert load_spy == [] and not (tmp_path / "out.webm").exists()


def test_lora_for_another_model_refused_before_loading(a14b: Any, load_spy: list[Any], tmp_path: Path) -> None:
    kit = make_model_set(tmp_path / "small", variant="wan2.1-t2v-1.3b", dtype="q4_0", sparse=True)
    lora = make_lora(tmp_path / "small.safetensors", kit.diffusion_model)  # 1.3B shapes on a 14B model
    with pytest.raises(wanpy.ModelFileError, match=r"loras\[0\]"):
        wanpy.generate_video("a fox", **a14b.pipeline_kwargs(), loras=[(str(lora), 1.0)])
    assert load_spy == []


@pytest.mark.parametrize("argv, message", [
    (["--size", "17x64"], "width 17"),
    (["--frames", "160"], "use 157 or 161"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--sample-method", "nope"], "argument --sample-method: invalid choice: 'nope'"),
    (["--scheduler", "ays"], "scheduler 'ays'"),
    (["--lora", "/no/such/lora.safetensors"], "loras[0]: no such file"),
    (["--init-image", "/no/such/image.png"], "init_image"),
])
def test_cli_refuses_before_loading(a14b: Any, load_spy: list[Any], tmp_path: Path, argv: list[str],
                                    message: str, capsys: pytest.CaptureFixture[str]) -> None:
    files = ["--diffusion-model", str(a14b.diffusion_model), "--vae", str(a14b.vae),
             "--high-noise-diffusion-model", str(a14b.high_noise_diffusion_model)]
    try:
        status = main(["generate", *files, "--prompt", "a fox", "-o", str(tmp_path / "out.webm"), *argv])
    except SystemExit as exited:  # argparse refuses a value outside its choices
        status = int(exited.code or 0)
    assert status == 2 and message in capsys.readouterr().err
    assert load_spy == [] and not (tmp_path / "out.webm").exists()


def test_request_runs_on_a_pipeline_of_another_family_refused() -> None:
    r = build_request("wan2.1-t2v-1.3b", "a fox", num_frames=5)

    class Fake:
        family = wanpy.FAMILIES[A14B]

    with pytest.raises(ValueError, match="the request is for wan2.1-t2v-1.3b; this pipeline runs wan2.2-t2v-a14b"):
        wanpy.WanPipeline._own_request(Fake(), r, {})  # type: ignore[arg-type]


def test_images_follow_one_rule(tmp_path: Path) -> None:
    from PIL import Image

    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    for image in (rgba, tmp_path / "rgba.png"):
        with pytest.raises(ValueError, match="mode must be RGB, got RGBA"):
            build_request("wan2.2-ti2v-5b", "a fox", width=32, height=32, num_frames=5, init_image=image)
    grey = Image.new("L", (32, 32), 7)
    grey.save(tmp_path / "grey.png")
    for image in (grey, tmp_path / "grey.png"):
        r = build_request("wan2.2-ti2v-5b", "a fox", width=32, height=32, num_frames=5, init_image=image)
        assert r.init_image is not None and r.init_image.shape == (32, 32, 3) and int(r.init_image.max()) == 7


def test_memmap_image_accepted(tmp_path: Path) -> None:
    mm = np.memmap(tmp_path / "img.raw", dtype=np.uint8, mode="w+", shape=(32, 32, 3))
    mm[:] = 9
    r = build_request("wan2.2-ti2v-5b", "a fox", width=32, height=32, num_frames=5, init_image=mm)
    assert r.init_image is not None and int(r.init_image[0, 0, 0]) == 9


def test_empty_continue_from_named() -> None:
    empty = wanpy.Video(frames=np.zeros((0, 32, 32, 3), np.uint8), fps=Fraction(16), seed=1)
    with pytest.raises(ValueError, match="continue_from: the video has no frames"):
        build_request("wan2.2-ti2v-5b", "a fox", width=32, height=32, num_frames=5, continue_from=empty)


def test_concatenate_names_the_bad_item() -> None:
    video = wanpy.Video(frames=np.zeros((1, 16, 16, 3), np.uint8), fps=Fraction(16), seed=1)
    with pytest.raises(TypeError, match=r"videos\[1\] must be a wanpy.Video, got str"):
        wanpy.concatenate([video, "x"])  # type: ignore[list-item]
