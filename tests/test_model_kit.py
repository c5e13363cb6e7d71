"""wanpy.testing: random-weight Wan model sets with the real layouts, deterministic and cached."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest

from wanpy.headers import read_header
from wanpy.identify import identify
from wanpy.testing import (
    DTYPES, KIT_VERSION, VARIANTS, ModelSet, cache_dir, cached_model_set, make_model_set, write_model_file,
)
from wanpy import layouts as wan_layouts
from wanpy.layouts import DitShape, TensorSpec

# Parameter counts of the published models (what the layouts must add up to).
PARAMS = {
    "wan2.1-t2v-1.3b": 1.419e9, "wan2.2-ti2v-5b": 5.000e9, "wan2.x-t2v-14b": 14.288e9,
    "wan2.2-t2v-a14b": 14.288e9, "wan2.2-i2v-a14b": 14.289e9, "wan2.1-i2v-14b": 16.395e9,
    "wan2.1-flf2v-14b": 16.396e9, "wan2.1-vae": 126.9e6, "wan2.2-vae": 704.7e6, "umt5-xxl": 5.681e9,
    "clip-vision-h": 632.1e6,
    # VACE: Comfy-Org's wan2.1_vace_1.3B_fp16 (4.31 GB) and wan2.1_vace_14B_fp16 (34.7 GB), 2 bytes a parameter
    "wan2.1-vace-1.3b": 2.154e9, "wan2.1-vace-14b": 17.338e9, "wan2.2-vace-fun-a14b": 17.338e9,
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _params(path: Path) -> float:
    return sum(t.nelements for t in read_header(path).tensors.values())


@pytest.fixture(scope="module")
def sparse_sets(tmp_path_factory) -> dict[str, ModelSet]:
    root = tmp_path_factory.mktemp("sparse")
    return {v: make_model_set(root / v, variant=v, dtype="q4_0", text_encoder=True, sparse=True) for v in VARIANTS}


# --- what a set holds --------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_is_identified_as_what_it_stands_for(sparse_sets, variant):
    ms = sparse_sets[variant]
    layout = VARIANTS[variant]
    dit = identify(read_header(ms.diffusion_model))
    assert dit.supported, dit.problems
    assert ms.family in dit.families and ms.family == layout.family
    if layout.two_experts:
        high = identify(read_header(ms.high_noise_diffusion_model))
        assert high.name == dit.name and ms.family in high.families
    else:
        assert ms.high_noise_diffusion_model is None
    vae = identify(read_header(ms.vae))
    assert vae.family == ("wan2.2-vae" if variant == "wan2.2-ti2v-5b" else "wan2.1-vae") and vae.has_encoder
    assert dit.out_channels == vae.z_dim
    assert identify(read_header(ms.text_encoder)).family == "umt5-xxl"
    if layout.clip_vision:
        assert dit.has_image_embedding
        assert identify(read_header(ms.clip_vision)).family == "clip-vision-h"
    else:
        assert ms.clip_vision is None and not dit.has_image_embedding


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_counts_match_the_published_models(sparse_sets, variant):
    ms = sparse_sets[variant]
    assert _params(ms.diffusion_model) == pytest.approx(PARAMS[variant], rel=1e-3)
    vae = "wan2.2-vae" if variant == "wan2.2-ti2v-5b" else "wan2.1-vae"
    assert _params(ms.vae) == pytest.approx(PARAMS[vae], rel=1e-3)
    assert _params(ms.text_encoder) == pytest.approx(PARAMS["umt5-xxl"], rel=1e-3)
    if ms.clip_vision:
        assert _params(ms.clip_vision) == pytest.approx(PARAMS["clip-vision-h"], rel=1e-3)


def test_file_sizes_are_those_of_real_q4_0_releases(sparse_sets):
    gb = {v: os.stat(ms.diffusion_model).st_size / 1e9 for v, ms in sparse_sets.items()}
    assert gb["wan2.1-t2v-1.3b"] == pytest.approx(0.807, abs=0.01)
    assert gb["wan2.2-ti2v-5b"] == pytest.approx(2.836, abs=0.01)
    assert gb["wan2.x-t2v-14b"] == pytest.approx(8.094, abs=0.01)
    assert gb["wan2.1-i2v-14b"] == pytest.approx(9.282, abs=0.01)
    assert os.stat(sparse_sets["wan2.1-t2v-1.3b"].vae).st_size / 1e6 == pytest.approx(253.9, abs=0.5)
    assert os.stat(sparse_sets["wan2.2-ti2v-5b"].vae).st_size / 1e9 == pytest.approx(1.41, abs=0.01)


def test_sparse_files_are_full_size_but_use_almost_no_disk(sparse_sets):
    for ms in sparse_sets.values():
        for path in ms.files:
            st = os.stat(path)
            assert st.st_size > 100e6
            assert st.st_blocks * 512 < 1 << 20, f"{path.name} uses {st.st_blocks * 512} bytes of disk"


@pytest.mark.parametrize("variant", ["wan2.1-t2v-1.3b", "wan2.2-i2v-a14b", "wan2.1-i2v-14b"])
def test_headers_hold_exactly_the_layout(sparse_sets, variant):
    ms = sparse_sets[variant]
    expected = wan_layouts.dit_layout(wan_layouts.DIT_CONFIGS[VARIANTS[variant].dit], "q4_0")
    h = read_header(ms.diffusion_model)
    assert [(t.name, t.shape, t.dtype) for t in h.tensors.values()] == \
        [(s.name, s.shape, s.ggml_type) for s in expected]
    assert h.metadata["general.architecture"] == "wan" and h.metadata["general.file_type"] == 2
    assert h.metadata["wanpy.testing.kit_version"] == KIT_VERSION
    vae = read_header(ms.vae)
    assert [(t.name, t.shape, t.dtype) for t in vae.tensors.values()] == \
        [(s.name, s.shape, s.ggml_type) for s in wan_layouts.vae_layout("2.1")]


def test_the_dit_has_the_names_and_types_of_real_wan_ggufs(sparse_sets):
    t = read_header(sparse_sets["wan2.1-t2v-1.3b"].diffusion_model).tensors
    assert t["patch_embedding.weight"].shape == (1536, 16, 1, 2, 2) and t["patch_embedding.weight"].dtype == "F16"
    assert t["text_embedding.0.weight"].shape == (1536, 4096) and t["text_embedding.0.weight"].dtype == "Q4_0"
    assert t["time_embedding.0.weight"].shape == (1536, 256) and t["time_embedding.0.weight"].dtype == "F16"
    assert t["time_projection.1.weight"].shape == (9216, 1536)
    assert t["blocks.29.self_attn.q.weight"].dtype == "Q4_0"
    assert t["blocks.0.modulation"].shape == (1, 6, 1536) and t["blocks.0.modulation"].dtype == "F32"
    assert t["blocks.0.cross_attn.norm_k.weight"].dtype == "F32" and t["blocks.0.norm3.bias"].shape == (1536,)
    assert t["blocks.0.ffn.0.weight"].shape == (8960, 1536)
    assert t["head.modulation"].shape == (1, 2, 1536) and t["head.head.weight"].shape == (64, 1536)
    assert "blocks.30.self_attn.q.weight" not in t
    i2v = read_header(sparse_sets["wan2.1-i2v-14b"].diffusion_model).tensors
    assert i2v["blocks.39.cross_attn.k_img.weight"].shape == (5120, 5120)
    assert i2v["img_emb.proj.3.weight"].shape == (5120, 1280)
    vae = read_header(sparse_sets["wan2.1-t2v-1.3b"].vae).tensors
    assert vae["encoder.conv1.weight"].shape == (96, 3, 3, 3, 3)
    assert vae["decoder.upsamples.3.time_conv.weight"].shape == (768, 384, 3, 1, 1)
    assert vae["decoder.upsamples.0.residual.0.gamma"].shape == (384, 1, 1, 1)
    assert vae["decoder.middle.1.norm.gamma"].shape == (384, 1, 1)
    te = read_header(sparse_sets["wan2.1-t2v-1.3b"].text_encoder).tensors
    assert te["token_embd.weight"].shape == (256384, 4096) and te["enc.blk.23.attn_rel_b.weight"].shape == (32, 64)


# --- values --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [d for d in DTYPES])
def test_random_values_spread_over_the_intended_range(tmp_path, dtype):
    a = 0.05
    ggml = wan_layouts.GGML_NAMES[dtype]
    path = write_model_file(tmp_path / "t.gguf", [TensorSpec("w", (64, 512), ggml, "uniform", a)], format="gguf",
                            seed=5)
    t = gguf.GGUFReader(path).tensors[0]
    values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
    assert values.shape == (64, 512) and np.isfinite(values).all()
    assert np.abs(values).max() <= a * 1.001
    assert abs(values.mean()) < 0.05 * a
    assert values.std() == pytest.approx(a / np.sqrt(3), rel=0.08)


def test_norms_are_ones_and_the_scale_follows_fan_in(tmp_path):
    cfg = DitShape(2, 256, 512, 16, 16)
    path = write_model_file(tmp_path / "d.gguf", wan_layouts.dit_layout(cfg, "f32"), format="gguf", seed=1)
    data = {t.name: np.asarray(t.data, dtype=np.float64) for t in gguf.GGUFReader(path).tensors}
    assert (data["blocks.0.norm3.weight"] == 1).all() and (data["blocks.0.norm3.bias"] == 0).all()
    for name, fan_in in (("blocks.0.ffn.0.weight", 256), ("blocks.0.ffn.2.weight", 512),
                         ("patch_embedding.weight", 64)):
        assert data[name].std() == pytest.approx(np.sqrt(1 / fan_in), rel=0.05)
    assert np.abs(data["blocks.1.ffn.0.bias"]).max() <= 0.01


# --- determinism ---------------------------------------------------------------------------

def _small_dit(path: Path, seed: int, dtype: str = "q4_0") -> Path:
    return write_model_file(path, wan_layouts.dit_layout(DitShape(2, 256, 512, 16, 16), dtype), format="gguf",
                            seed=seed, seed_key="dit")


def test_same_arguments_give_byte_identical_files(tmp_path):
    for dtype in ("q4_0", "q8_0", "q4_k", "f16", "bf16"):
        a, b = _small_dit(tmp_path / f"a-{dtype}.gguf", 3, dtype), _small_dit(tmp_path / f"b-{dtype}.gguf", 3, dtype)
        assert a.read_bytes() == b.read_bytes()
    assert _small_dit(tmp_path / "c.gguf", 4).read_bytes() != (tmp_path / "a-q4_0.gguf").read_bytes()


def test_the_vae_is_byte_identical_across_runs_and_formats_hold_the_same_values(tmp_path):
    specs = wan_layouts.vae_layout("2.1")
    a = write_model_file(tmp_path / "a.safetensors", specs, format="safetensors", seed=0, seed_key="wan2.1-vae")
    b = write_model_file(tmp_path / "b.safetensors", specs, format="safetensors", seed=0, seed_key="wan2.1-vae")
    assert _sha256(a) == _sha256(b)
    g = write_model_file(tmp_path / "c.gguf", specs, format="gguf", seed=0, seed_key="wan2.1-vae")
    st, gg = read_header(a), read_header(g)
    with open(a, "rb") as fa, open(g, "rb") as fg:
        for name in ("encoder.conv1.weight", "decoder.head.2.weight", "decoder.upsamples.0.residual.0.gamma"):
            x, y = st.tensors[name], gg.tensors[name]
            fa.seek(x.offset)
            fg.seek(y.offset)
            assert fa.read(x.nbytes) == fg.read(y.nbytes)


def test_the_two_experts_differ(tmp_path):
    ms = make_model_set(tmp_path, variant="wan2.2-t2v-a14b", sparse=True)
    assert read_header(ms.diffusion_model).tensors.keys() == read_header(ms.high_noise_diffusion_model).tensors.keys()
    assert ms.diffusion_model != ms.high_noise_diffusion_model


@pytest.mark.slow
def test_the_full_1_3b_set_is_byte_identical_and_loadable_shaped(tmp_path):
    a = make_model_set(tmp_path / "a", variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    b = make_model_set(tmp_path / "b", variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    for x, y in zip(a.files, b.files):
        assert x.name == y.name and _sha256(x) == _sha256(y)
    assert os.stat(a.diffusion_model).st_blocks * 512 >= 0.8e9  # dense: really written
    reader = gguf.GGUFReader(a.diffusion_model)
    for t in reader.tensors[:60]:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        assert np.isfinite(values).all(), t.name


# --- the cache -----------------------------------------------------------------------------

def test_cache_honours_wanpy_model_cache_and_reuses_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANPY_MODEL_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    first = cached_model_set(variant="wan2.x-t2v-14b", dtype="q8_0", seed=2, sparse=True)
    assert first.diffusion_model.is_relative_to(tmp_path / "cache" / f"kit-v{KIT_VERSION}")
    assert "wan2.x-t2v-14b-q8_0-seed2" in str(first.diffusion_model)
    stamps = {p: p.stat().st_mtime_ns for p in first.files}
    again = cached_model_set(variant="wan2.x-t2v-14b", dtype="q8_0", seed=2, sparse=True)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in again.files} == stamps  # reused, not rewritten
    other = cached_model_set(variant="wan2.x-t2v-14b", dtype="q8_0", seed=3, sparse=True)
    assert other.diffusion_model.parent != first.diffusion_model.parent


def test_cache_replaces_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WANPY_MODEL_CACHE", str(tmp_path))
    ms = cached_model_set(variant="wan2.1-t2v-1.3b", sparse=True)
    size = ms.vae.stat().st_size
    with open(ms.vae, "r+b") as f:
        f.truncate(size // 2)
    again = cached_model_set(variant="wan2.1-t2v-1.3b", sparse=True)
    assert again.vae.stat().st_size == size and identify(read_header(again.vae)).family == "wan2.1-vae"


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("WANPY_MODEL_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "wanpy" / "models"


def test_two_processes_filling_the_cache_at_once_agree(tmp_path):
    code = textwrap.dedent("""
        from wanpy.testing import cached_model_set
        ms = cached_model_set(variant="wan2.1-i2v-14b", text_encoder=True, sparse=True)
        print(*ms.files)
    """)
    env = {**os.environ, "WANPY_MODEL_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    for path in outs[0][0].split():
        assert identify(read_header(path)).supported
    leftovers = [p for p in Path(tmp_path).rglob("*") if ".tmp-" in p.name]
    assert not leftovers


# --- arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, phrase", [
    ({"variant": "wan2.1-t2v-2b"}, ValueError, "known: wan2.1-t2v-1.3b"),
    ({"dtype": "q3_k"}, ValueError, "unknown dtype 'q3_k'"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed must be an integer"),
    ({"seed": True}, TypeError, "seed must be an integer"),
    ({"vae_format": "pt"}, ValueError, "vae_format"),
    ({"sparse": 1}, TypeError, "sparse must be True or False"),
    ({"text_encoder": "yes"}, TypeError, "text_encoder must be True or False"),
])
def test_bad_arguments_are_refused(tmp_path, monkeypatch, kwargs, error, phrase):
    monkeypatch.setenv("WANPY_MODEL_CACHE", str(tmp_path))
    with pytest.raises(error, match=phrase):
        make_model_set(tmp_path, **kwargs)
    with pytest.raises(error, match=phrase):
        cached_model_set(**kwargs)
    assert not any(tmp_path.iterdir())


def test_arguments_after_the_directory_are_keyword_only(tmp_path):
    with pytest.raises(TypeError):
        make_model_set(tmp_path, "wan2.1-t2v-1.3b")  # type: ignore[misc]


def test_model_set_names_its_paths_like_the_pipeline(tmp_path):
    ms = make_model_set(tmp_path, variant="wan2.1-flf2v-14b", vae_format="gguf", sparse=True)
    assert ms.vae.suffix == ".gguf" and identify(read_header(ms.vae)).family == "wan2.1-vae"
    assert set(ms.pipeline_kwargs()) == {"diffusion_model", "vae", "clip_vision"}
    assert (ms.variant, ms.dtype, ms.seed, ms.sparse, ms.family) == ("wan2.1-flf2v-14b", "q4_0", 0, True,
                                                                     "wan2.1-flf2v-14b")


def test_the_gguf_writer_writes_what_gguf_py_writes(tmp_path):
    from wanpy.testing._writer import tensor_chunks

    specs = wan_layouts.dit_layout(DitShape(2, 256, 512, 16, 16), "q4_0") + wan_layouts.vae_layout("2.1")[:10]
    ours = write_model_file(tmp_path / "ours.gguf", specs, format="gguf", seed=0, seed_key="x",
                            metadata={"general.architecture": "wan", "general.quantization_version": 2})
    writer = gguf.GGUFWriter(tmp_path / "theirs.gguf", "wan")
    writer.add_quantization_version(2)
    for s in specs:
        qtype = gguf.GGMLQuantizationType[s.ggml_type]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        data = np.concatenate([np.frombuffer(c, np.uint8) for c in tensor_chunks(s, 0, "x")])
        writer.add_tensor(s.name, data.reshape(*s.shape[:-1], s.shape[-1] // block * size), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert ours.read_bytes() == (tmp_path / "theirs.gguf").read_bytes()
