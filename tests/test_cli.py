"""The `wanpy` command line, each command through a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import wanpy


def wanpy_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wanpy", *args], capture_output=True, text=True, timeout=timeout)


def test_help_has_examples():
    result = wanpy_cli("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "wanpy demo -o demo.webm" in result.stdout
    for command in ("info", "preflight", "generate", "probe", "batch", "demo"):
        sub = wanpy_cli(command, "--help")
        assert sub.returncode == 0, command
        assert "example" in sub.stdout, command


def test_probe_reports_what_the_file_holds(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 48, 3), dtype=np.uint8)
    path = wanpy.save_video(tmp_path / "clip.webm", frames, fps=16)
    result = wanpy_cli("probe", str(path))
    assert result.returncode == 0, result.stderr
    assert "9 frames" in result.stdout and "48x32" in result.stdout and "16" in result.stdout


def test_preflight_exit_status_says_whether_it_fits():
    result = wanpy_cli("preflight", "wan2.x-t2v-14b", "--size", "832x480", "--frames", "161",
                       "--max-allocation", "0xfffffffc")
    assert result.returncode == 3, result.stderr
    out = result.stdout
    assert "pre-flight: Wan2.x-T2V-14B (wan2.x-t2v-14b:f16), 832x480, 161 frames" in out
    assert re.search(r"diffusion_model mul_mat f32 \[63960, 63960, 40\]\s+sampling\s+609\.59 GiB\s+NO", out)
    assert "DOES NOT FIT: diffusion_model mul_mat f32 [63960, 63960, 40] (sampling) needs 609.59 GiB" in out
    assert "the device allows 4.00 GiB (4,294,967,292 B)" in out
    assert "what would fit instead:" in out and "frames fit" in out

    ok = wanpy_cli("preflight", "wan2.1-t2v-1.3b:q4_0", "--size", "64x64", "--frames", "5",
                   "--max-allocation", "4096MiB", "--total-memory", "8GiB")
    assert ok.returncode == 0, ok.stderr
    assert "\nFITS\n" in ok.stdout and "memory 8.00 GiB" in ok.stdout

    bad = wanpy_cli("preflight", "wan2.1-t2v-1.3b", "--size", "64x64", "--frames", "6")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "use 5 or 9" in bad.stderr
    size = wanpy_cli("preflight", "wan2.1-t2v-1.3b", "--size", "64x64", "--frames", "5", "--max-allocation", "4 apples")
    assert size.returncode == 2 and "not a size" in size.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = wanpy_cli("probe", str(tmp_path / "missing.webm"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("wanpy: error:") and len(result.stderr.strip().splitlines()) == 1


def test_generate_refuses_a_bad_frame_count_before_loading(tmp_path):
    from wanpy.testing import cached_model_set

    models = cached_model_set()
    result = wanpy_cli("generate", "--diffusion-model", str(models.diffusion_model), "--vae", str(models.vae),
                       "--prompt", "x", "--size", "64x64", "--frames", "160", "-o", str(tmp_path / "x.webm"))
    assert result.returncode == 2
    assert "use 157 or 161" in result.stderr
    assert not (tmp_path / "x.webm").exists()


def test_generate_refuses_a_file_that_is_no_lora_before_loading(tmp_path):
    from wanpy.testing import cached_model_set

    models = cached_model_set()
    result = wanpy_cli("-v", "generate", "--diffusion-model", str(models.diffusion_model), "--vae",
                       str(models.vae), "--prompt", "x", "--size", "64x64", "--frames", "5", "--lora",
                       f"{models.vae}:0.5", "-o", str(tmp_path / "x.webm"))
    assert result.returncode == 1
    assert "wanpy: error: loras[0]: " in result.stderr and "holds no LoRA tensors" in result.stderr
    assert "loading tensors" not in result.stderr  # refused before sd.cpp loaded anything
    assert not (tmp_path / "x.webm").exists()


def test_lora_option_parses_an_optional_multiplier():
    from wanpy.cli import parse_lora

    assert parse_lora("style.safetensors") == ("style.safetensors", 1.0)
    assert parse_lora("style.safetensors:0.75") == ("style.safetensors", 0.75)
    assert parse_lora("C:/loras/a.safetensors") == ("C:/loras/a.safetensors", 1.0)
    assert parse_lora("C:/loras/a.safetensors:-1") == ("C:/loras/a.safetensors", -1.0)


@pytest.mark.slow
def test_demo_writes_a_webm_that_probes_as_the_frames_it_printed(tmp_path):
    out = tmp_path / "demo.webm"
    result = wanpy_cli("demo", "-o", str(out), "--size", "64x64", "--frames", "5", "--steps", "2",
                       "--no-progress")
    assert result.returncode == 0, result.stderr
    printed = re.search(r"Video: (\d+) frames (\d+)x(\d+) at 16 fps", result.stdout)
    assert printed, result.stdout
    info = wanpy.probe_video(out)
    assert info.frame_count == int(printed.group(1)) == 5
    assert (info.width, info.height) == (64, 64)
    assert "random" in result.stdout and "wanpy generate" in result.stdout
    assert "pre-flight: Wan2.1-T2V-1.3B" in result.stdout and "\nFITS\n" in result.stdout
