"""Bad model files never reach sd.cpp: each case runs in a fresh process, which must
exit normally with a clear Python exception (sd.cpp would abort or crash on several)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from wanpy.testing import cached_model_set, make_model_set, write_model_file
from wanpy.testing import wan_layouts

CASE = """
import json, wanpy
try:
    wanpy.WanPipeline({dit!r}, {vae!r}, n_threads=1)
    print(json.dumps({{"error": None}}))
except Exception as exc:
    print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
"""


@pytest.fixture(scope="module")
def kit():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


def _truncated(src: Path, dst: Path, size: int) -> str:
    with open(src, "rb") as fh:
        dst.write_bytes(fh.read(size))
    return str(dst)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _dit_with_blocks(tmp: Path, blocks: int) -> str:
    config = dataclasses.replace(wan_layouts.DIT_CONFIGS["wan2.1-t2v-1.3b"], num_layers=blocks)
    return str(write_model_file(tmp / f"dit{blocks}.gguf", wan_layouts.dit_layout(config, "q4_0"),
                                format="gguf", sparse=True))


def _decode_only_vae(tmp: Path) -> str:
    specs = [t for t in wan_layouts.vae_layout("2.1") if not t.name.startswith(("encoder.", "conv1."))]
    return str(write_model_file(tmp / "vae-decoder-only.safetensors", specs, format="safetensors", sparse=True))


CASES = {
    "missing file": (lambda k, t: (str(t / "nope.gguf"), str(k.vae)), "FileNotFoundError", "no such file"),
    "a directory": (lambda k, t: (str(t), str(k.vae)), "IsADirectoryError", "is a directory"),
    "empty file": (lambda k, t: (_write(t / "empty.gguf", b""), str(k.vae)), "ValueError", "file is empty"),
    "GGUF magic then random bytes": (
        lambda k, t: (_write(t / "r.gguf", b"GGUF" + os.urandom(4096)), str(k.vae)),
        "ModelFileError", "r.gguf"),
    "truncated in the tensor table": (
        lambda k, t: (_truncated(Path(k.diffusion_model), t / "cut.gguf", 20_000), str(k.vae)),
        "ModelFileError", "cut.gguf"),
    "truncated in the data": (
        lambda k, t: (_truncated(Path(k.diffusion_model), t / "cut2.gguf", 100_000_000), str(k.vae)),
        "ModelFileError", "cut2.gguf"),
    "safetensors header lying about sizes": (
        lambda k, t: (str(k.diffusion_model), _truncated(Path(k.vae), t / "vae.safetensors", 1_000_000)),
        "ModelFileError", "vae.safetensors"),
    "the VAE given as the diffusion model": (lambda k, t: (str(k.vae), str(k.vae)), "ModelFileError",
                                             "not a Wan diffusion model"),
    "the DiT given as the VAE": (lambda k, t: (str(k.diffusion_model), str(k.diffusion_model)), "ModelFileError",
                                 "needs the wan2.1-vae"),
    "a Wan DiT with 29 blocks": (lambda k, t: (_dit_with_blocks(t, 29), str(k.vae)), "ModelFileError", "29"),
    "a decode-only VAE": (lambda k, t: (str(k.diffusion_model), _decode_only_vae(t)), "ModelFileError",
                          "encoder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_files_raise_and_the_process_survives(case, kit, tmp_path, python_subprocess):
    make, error, fragment = CASES[case]
    dit, vae = make(kit, tmp_path)
    result = python_subprocess(CASE.format(dit=dit, vae=vae), timeout=300)
    assert result.returncode == 0, f"process died ({result.returncode}): {result.stderr[-2000:]}"
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] == error, outcome
    assert fragment in outcome["message"], outcome


def test_i2v_without_clip_vision_is_refused_before_loading(tmp_path, python_subprocess):
    models = make_model_set(tmp_path, variant="wan2.1-i2v-14b", dtype="q4_0", sparse=True)
    result = python_subprocess(CASE.format(dit=str(models.diffusion_model), vae=str(models.vae)))
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "ValueError"
    assert "wan2.1-i2v-14b needs clip_vision" in outcome["message"]
