"""Bad model files and pipeline arguments never reach sd.cpp: each case runs ``wanpy.generate_video``
with an output path in a fresh process, which must exit normally with a clear exception and
no output file (sd.cpp would abort or crash on several of these files).

The harness is ``reliability_harness``; generation-time cases are in test_reliability_runtime.py.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path
from typing import Any, Callable

import pytest

from reliability_harness import LOADING, Case, check, models_of, run
from wanpy.testing import cached_model_set, make_model_set, write_model_file
from wanpy import layouts as wan_layouts

SETUP = "import wanpy\n"


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


def _dit_without(tmp: Path, name: str) -> str:
    specs = [s for s in wan_layouts.dit_layout(wan_layouts.DIT_CONFIGS["wan2.1-t2v-1.3b"], "q4_0") if s.name != name]
    return str(write_model_file(tmp / "dit-missing-one.gguf", specs, format="gguf", sparse=True))


def _dit_with_type(tmp: Path, name: str, ggml_type: str) -> str:
    specs = [wan_layouts.TensorSpec(s.name, s.shape, ggml_type, s.init, s.scale) if s.name == name else s
             for s in wan_layouts.dit_layout(wan_layouts.DIT_CONFIGS["wan2.1-t2v-1.3b"], "q4_0")]
    return str(write_model_file(tmp / f"dit-{ggml_type}.gguf", specs, format="gguf", sparse=True))


def _decode_only_vae(tmp: Path, version: str = "2.1") -> str:
    specs = [t for t in wan_layouts.vae_layout(version) if not t.name.startswith(("encoder.", "conv1."))]
    return str(write_model_file(tmp / f"vae{version}-decoder-only.safetensors", specs, format="safetensors",
                                sparse=True))


def _lying_safetensors(tmp: Path) -> str:
    """A well-formed header whose tensor claims 4096 F32 values but 16 bytes of data."""
    header = b'{"decoder.conv1.weight":{"dtype":"F32","shape":[4096],"data_offsets":[0,16]}}'
    return _write(tmp / "lying.safetensors", struct.pack("<Q", len(header)) + header + bytes(16))


def _unreadable(kit: Any, tmp: Path) -> str:
    path = Path(_truncated(Path(kit.diffusion_model), tmp / "locked.gguf", 4096))
    path.chmod(0)
    try:
        with open(path, "rb"):
            readable = True  # root reads whatever the mode says
    except PermissionError:
        readable = False
    if readable:
        pytest.skip("running as root: chmod 000 does not stop reads, so no file is unreadable here")
    return str(path)


def _sparse_set(tmp: Path, variant: str) -> Any:
    return make_model_set(tmp / variant, variant=variant, dtype="q4_0", sparse=True)


Make = Callable[[Any, Path], dict[str, Any]]


def _dv(dit: Make | None = None, vae: Make | None = None) -> Make:
    """Pipeline files: the kit's DiT and VAE unless replaced."""
    return lambda k, t: {"diffusion_model": dit(k, t) if dit else str(k.diffusion_model),
                         "vae": vae(k, t) if vae else str(k.vae)}


def _set(variant: str, **replace: Callable[[Any, Path, Any], str | None]) -> Make:
    """The files of a sparse ``variant`` set (headers only: refused before loading), some replaced."""
    def make(k: Any, t: Path) -> dict[str, Any]:
        s = _sparse_set(t, variant)
        files = {name: path for name, path in models_of(s).items() if path is not None}
        for name, fn in replace.items():
            files[name] = fn(k, t, s)
        return {name: path for name, path in files.items() if path is not None}
    return make


# id: (the files, exception class, message fragment, xfail reason or None)
FILE_CASES: dict[str, tuple[Make, str, str, str | None]] = {
    "missing file": (_dv(dit=lambda k, t: str(t / "nope.gguf")), "FileNotFoundError",
                     "diffusion_model: no such file", None),
    "unreadable file": (_dv(dit=_unreadable), "PermissionError", "diffusion_model: not readable", None),
    "a directory": (_dv(dit=lambda k, t: str(t)), "IsADirectoryError", "is a directory", None),
    "empty file": (_dv(dit=lambda k, t: _write(t / "empty.gguf", b"")), "ValueError", "file is empty", None),
    "a path with a NUL character": (_dv(vae=lambda k, t: str(t / "vae\x00.safetensors")), "ValueError",
                                    "vae: the path contains a NUL character", None),
    "GGUF truncated in the header": (_dv(dit=lambda k, t: _truncated(Path(k.diffusion_model), t / "h.gguf", 20)),
                                     "ModelFileError", r"h\.gguf: the metadata count needs 8 bytes", None),
    "GGUF truncated in the tensor table": (
        _dv(dit=lambda k, t: _truncated(Path(k.diffusion_model), t / "cut.gguf", 20_000)),
        "ModelFileError", r"cut\.gguf: .*(truncated|ends at)", None),
    "GGUF truncated in the data": (
        _dv(dit=lambda k, t: _truncated(Path(k.diffusion_model), t / "cut2.gguf", 100_000_000)),
        "ModelFileError", r"cut2\.gguf: tensor .* runs past the end of the file", None),
    "GGUF magic then random bytes": (_dv(dit=lambda k, t: _write(t / "r.gguf", b"GGUF" + os.urandom(4096))),
                                     "ModelFileError", r"r\.gguf", None),
    "safetensors truncated in its JSON header": (
        _dv(vae=lambda k, t: _truncated(Path(k.vae), t / "vae-h.safetensors", 1000)),
        "ModelFileError", r"vae-h\.safetensors: not a GGUF file .*nor a safetensors file", None),
    "safetensors truncated in the data": (
        _dv(vae=lambda k, t: _truncated(Path(k.vae), t / "vae.safetensors", 1_000_000)),
        "ModelFileError", r"vae\.safetensors: tensor .* outside the .* bytes of data", None),
    "safetensors header lying about sizes": (_dv(vae=lambda k, t: _lying_safetensors(t)), "ModelFileError",
                                             r"F32 \[4096\] \(16384 bytes\) but its data_offsets \[0, 16\]", None),
    "a PyTorch checkpoint": (_dv(dit=lambda k, t: _write(t / "m.ckpt", b"PK\x03\x04" + bytes(100))),
                             "ModelFileError", "PyTorch zip checkpoint", None),
    "the VAE given as the diffusion model": (_dv(dit=lambda k, t: str(k.vae)), "ModelFileError",
                                             "not a Wan diffusion model", None),
    "the DiT given as the VAE": (_dv(vae=lambda k, t: str(k.diffusion_model)), "ModelFileError",
                                 "needs the wan2.1-vae", None),
    "the VAE given as the text encoder": (
        lambda k, t: {**_dv()(k, t), "text_encoder": str(k.vae)}, "ModelFileError", "text_encoder: .* reads as: vae",
        None),
    "the DiT given as CLIP vision": (
        _set("wan2.1-i2v-14b", clip_vision=lambda k, t, s: str(s.diffusion_model)), "ModelFileError",
        "clip_vision: .* reads as: dit", None),
    "the VAE given as the high-noise expert": (
        _set("wan2.2-t2v-a14b", high_noise_diffusion_model=lambda k, t, s: str(s.vae)), "ModelFileError",
        "high_noise_diffusion_model: .* is not a Wan diffusion model", None),
    "the Wan2.1 VAE with Wan2.2 TI2V-5B": (_set("wan2.2-ti2v-5b", vae=lambda k, t, s: str(k.vae)),
                                          "ModelFileError", "needs the wan2.2-vae", None),
    "a Wan DiT with 29 blocks": (_dv(dit=lambda k, t: _dit_with_blocks(t, 29)), "ModelFileError",
                                 "29 transformer blocks", None),
    "a DiT with an integer (I32) Linear weight": (
        _dv(dit=lambda k, t: _dit_with_type(t, "blocks.0.self_attn.q.weight", "I32")), "ModelFileError",
        r"'blocks.0.self_attn.q.weight' is I32, a type ggml cannot compute with", None),
    "a DiT with a Q8_K Linear weight": (
        _dv(dit=lambda k, t: _dit_with_type(t, "blocks.3.ffn.0.weight", "Q8_K")), "ModelFileError",
        r"'blocks.3.ffn.0.weight' is Q8_K, a type ggml cannot compute with", None),
    "VACE with a decode-only VAE": (_set("wan2.1-vace-1.3b", vae=lambda k, t, s: _decode_only_vae(t)),
                                    "ModelFileError", "no encoder weights", None),
    "an image mode (TI2V-5B) with a decode-only VAE": (
        _set("wan2.2-ti2v-5b", vae=lambda k, t, s: _decode_only_vae(t, "2.2")), "ModelFileError",
        "no encoder weights", None),
    "I2V without clip vision": (_set("wan2.1-i2v-14b", clip_vision=lambda k, t, s: None), "ValueError",
                                "wan2.1-i2v-14b needs clip_vision", None),
    "FLF2V without clip vision": (_set("wan2.1-flf2v-14b", clip_vision=lambda k, t, s: None), "ValueError",
                                  "wan2.1-flf2v-14b needs clip_vision", None),
    "a DiT missing one tensor": (_dv(dit=lambda k, t: _dit_without(t, "blocks.7.ffn.2.weight")), "LoadError",
                                 "loading the models failed", None),
    "a DiT missing one tensor: the error names it": (
        _dv(dit=lambda k, t: _dit_without(t, "blocks.7.ffn.2.weight")), "LoadError",
        r"sd.cpp said: .*blocks\.7\.ffn\.2\.weight", None),
}


def _file_case(name: str) -> Any:
    make, error, fragment, xfail = FILE_CASES[name]
    return pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=True, reason=xfail)] if xfail else [])


@pytest.mark.parametrize("name", [_file_case(n) for n in FILE_CASES])
def test_bad_model_files_raise_and_the_process_survives(name, kit, tmp_path):
    make, error, fragment, _ = FILE_CASES[name]
    files = make(kit, tmp_path)
    case = Case(name, f"wanpy.generate_video('a red fox', output=OUT, **{files!r}, **SMALL)", error, fragment,
                forbid=None if error == "LoadError" else LOADING)
    check(case, run([case], setup=SETUP, models=models_of(kit), tmp=tmp_path))


# --- pipeline arguments, refused before loading --------------------------------------------------
ARGUMENT_CASES = [
    Case("n_threads 0", "n_threads=0", "ValueError", "n_threads must be >= 1, got 0"),
    Case("n_threads huge", "n_threads=10**6", "ValueError", "n_threads must be <= 1024"),
    Case("n_threads float", "n_threads=2.0", "TypeError", "n_threads must be an integer, got float 2.0"),
    Case("device that does not exist", "device=99", "ValueError", "device 99 does not exist; devices: 0 "),
    Case("device negative", "device=-1", "ValueError", "device must be >= 0, got -1"),
    Case("flash_attention not a bool", "flash_attention='yes'", "TypeError",
         "flash_attention must be True or False, got 'yes'"),
    Case("model path of the wrong type", "diffusion_model=b'/x.gguf'", "TypeError",
         "diffusion_model must be a path, got bytes"),
    Case("unknown keyword", "num_frame=5", "TypeError", "num_frame"),
]


@pytest.mark.parametrize("case", [c.param() for c in ARGUMENT_CASES])
def test_bad_pipeline_arguments_are_refused_before_loading(case, kit, tmp_path):
    files = {"diffusion_model": str(kit.diffusion_model), "vae": str(kit.vae)}
    code = f"wanpy.generate_video('a red fox', output=OUT, **{{**{files!r}, **SMALL, **dict({case.code})}})"
    case = dataclasses.replace(case, code=code, forbid=LOADING)
    check(case, run([case], setup=SETUP, models=models_of(kit), tmp=tmp_path))
