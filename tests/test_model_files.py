"""wanpy.headers and wanpy.identify: header reading (round trips, corruption) and sd.cpp-style
identification."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from wanpy.errors import ModelFileError
from wanpy.headers import GGML_TYPES, ModelHeader, read_header
from wanpy.identify import identify
from wanpy.testing import make_model_set, write_model_file
from wanpy.layouts import DitShape, TensorSpec, dit_layout, umt5_xxl_layout, vae_layout

# A small table covering the shapes and types real files have: 1-D, 2-D, 3-D, 5-D; float and quantized.
SMALL = [
    TensorSpec("conv.weight", (8, 4, 1, 2, 2), "F16", "uniform", 0.3),
    TensorSpec("conv.bias", (8,), "F32", "uniform", 0.01),
    TensorSpec("linear.weight", (64, 256), "Q4_0", "uniform", 0.1),
    TensorSpec("linear_k.weight", (16, 256), "Q4_K", "uniform", 0.1),
    TensorSpec("linear_8.weight", (16, 64), "Q8_0", "uniform", 0.1),
    TensorSpec("linear_bf.weight", (16, 64), "BF16", "uniform", 0.1),
    TensorSpec("modulation", (1, 6, 32), "F32", "uniform", 0.1),
    TensorSpec("norm.weight", (32,), "F32", "ones"),
]
SMALL_FLOAT = [s for s in SMALL if s.ggml_type in ("F16", "F32", "BF16")]


def small_gguf(path: Path, **kw) -> Path:
    meta = {"general.architecture": "wan", "general.file_type": 2, "some.float": 1.5, "some.flag": True}
    return write_model_file(path, SMALL, format="gguf", seed=1, metadata=meta, **kw)


def small_safetensors(path: Path, **kw) -> Path:
    return write_model_file(path, SMALL_FLOAT, format="safetensors", seed=1, metadata={"format": "pt"}, **kw)


# --- round trips ---------------------------------------------------------------------------

def test_gguf_header_round_trips_what_the_writer_wrote(tmp_path):
    path = small_gguf(tmp_path / "small.gguf")
    h = read_header(path)
    assert h.format == "gguf" and h.path == str(path) and h.file_size == path.stat().st_size
    assert list(h.tensors) == [s.name for s in SMALL]
    assert [h.tensors[s.name].shape for s in SMALL] == [s.shape for s in SMALL]
    assert [h.tensors[s.name].dtype for s in SMALL] == [s.ggml_type for s in SMALL]
    assert h.metadata["general.architecture"] == "wan" and h.metadata["general.file_type"] == 2
    assert h.metadata["some.float"] == 1.5 and h.metadata["some.flag"] is True
    assert h.data_offset % 32 == 0
    # offsets: contiguous, each padded to the 32-byte alignment, the last one ending the file
    offset = h.data_offset
    for s in SMALL:
        t = h.tensors[s.name]
        assert t.offset == offset
        offset += -(-t.nbytes // 32) * 32
    assert offset == h.file_size


def test_gguf_header_agrees_with_gguf_py(tmp_path):
    path = small_gguf(tmp_path / "small.gguf")
    h = read_header(path)
    reader = gguf.GGUFReader(path)
    assert [t.name for t in reader.tensors] == list(h.tensors)
    for t in reader.tensors:
        info = h.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape))  # gguf-py's .shape is ggml's ne order
        assert info.ne == tuple(int(d) for d in t.shape)
        assert info.dtype == t.tensor_type.name
        assert info.offset == t.data_offset and info.nbytes == t.n_bytes


def test_gguf_tensor_bytes_are_where_the_header_says(tmp_path):
    path = small_gguf(tmp_path / "small.gguf")
    h = read_header(path)
    reader = gguf.GGUFReader(path)
    raw = path.read_bytes()
    for t in reader.tensors:
        info = h.tensors[t.name]
        assert raw[info.offset:info.offset + info.nbytes] == np.asarray(t.data).tobytes()


def test_safetensors_header_round_trips_and_agrees_with_safetensors(tmp_path):
    path = small_safetensors(tmp_path / "small.safetensors")
    h = read_header(path)
    assert h.format == "safetensors" and h.metadata == {"format": "pt"}
    assert list(h.tensors) == [s.name for s in SMALL_FLOAT]
    raw = path.read_bytes()
    with safe_open(path, "numpy") as f:
        assert set(f.keys()) == set(h.tensors)
        for s in SMALL_FLOAT:
            info = h.tensors[s.name]
            assert info.shape == s.shape and info.dtype == s.ggml_type
            if s.ggml_type != "BF16":  # NumPy has no bfloat16
                assert raw[info.offset:info.offset + info.nbytes] == f.get_tensor(s.name).tobytes()
    assert h.data_offset + sum(t.nbytes for t in h.tensors.values()) == h.file_size


def test_ggml_type_table_matches_gguf_py():
    for type_id, (name, block, size) in GGML_TYPES.items():
        qtype = gguf.GGMLQuantizationType(type_id)
        assert qtype.name == name
        assert gguf.GGML_QUANT_SIZES[qtype] == (block, size)


def test_reading_a_full_size_14b_header_is_fast(tmp_path):
    ms = make_model_set(tmp_path, variant="wan2.2-t2v-a14b", sparse=True)
    best = min(_timed(read_header, ms.diffusion_model) for _ in range(3))
    assert best < 0.1, f"reading a 14B header took {best * 1000:.0f} ms"


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# --- what is not a model file -----------------------------------------------------------

def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "nope.gguf")


def test_directory_is_a_directory_error(tmp_path):
    with pytest.raises(IsADirectoryError):
        read_header(tmp_path)


@pytest.mark.parametrize("content, phrase", [
    (b"", "empty"),
    (b"hello world, this is not a model", "not a GGUF file"),
    (b"PK\x03\x04" + bytes(60), "PyTorch zip"),
])
def test_not_a_model_file(tmp_path, content, phrase):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=phrase) as exc:
        read_header(path)
    assert exc.value.path == str(path) and str(path) in str(exc.value)


# --- corrupt GGUF headers, made by hand ---------------------------------------------------

def _s(text: str | bytes) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def _kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<II", 4, value)


def _tensor(name: str | bytes, ne: tuple[int, ...], type_id: int = 0, offset: int = 0) -> bytes:
    return _s(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, type_id, offset)


def _gguf(kvs: list[bytes] = (), tensors: list[bytes] = (), data: bytes = b"", *, version: int = 3,
          n_tensors: int | None = None, n_kv: int | None = None, magic: bytes = b"GGUF",
          align: int = 32) -> bytes:
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(tensors)
    head += bytes(-len(head) % align)
    return head + data


CORRUPT_GGUF = {
    "version 1": (_gguf(version=1), "unsupported GGUF version 1"),
    "big endian": (b"GGUF" + struct.pack(">I", 3) + bytes(16), "big-endian"),
    "absurd tensor count": (_gguf(n_tensors=2**60), "claims 1152921504606846976 tensors"),
    "absurd metadata count": (_gguf(n_kv=2**40), "metadata entries"),
    "key length past EOF": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40) + bytes(64),
                            "file ends"),
    "string value past EOF": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<IQ", 8, 10**12)
                              + bytes(64), "file ends"),
    "truncated count": (b"GGUF" + struct.pack("<I", 3) + b"\x01\x00", "file ends"),
    "empty key": (_gguf([_kv_u32("", 1)]), "empty"),
    "duplicate key": (_gguf([_kv_u32("a", 1), _kv_u32("a", 2)]), "appears twice"),
    "unknown value type": (_gguf([_s("a") + struct.pack("<II", 13, 0)]), "unknown value type 13"),
    "absurd array": (_gguf([_s("a") + struct.pack("<IIQ", 9, 4, 2**50)]), "array elements"),
    "array of arrays": (_gguf([_s("a") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 4, 0)]),
                        "array of arrays"),
    "alignment not a power of two": (_gguf([_kv_u32("general.alignment", 24)]), "power of two"),
    "alignment not uint32": (_gguf([_s("general.alignment") + struct.pack("<IQ", 10, 32)]), "uint32"),
    "unknown ggml type": (_gguf(tensors=[_tensor("t", (4,), 99)], data=bytes(64)), "ggml type 99"),
    "too many dims": (_gguf(tensors=[_tensor("t", (1,) * 9)], data=bytes(64)), "9 dimensions"),
    "zero dim": (_gguf(tensors=[_tensor("t", (4, 0, 2))], data=bytes(64)), "zero-sized"),
    "row not a block multiple": (_gguf(tensors=[_tensor("t", (16, 2), 2)], data=bytes(64)), "block size 32"),
    "data past EOF": (_gguf(tensors=[_tensor("t", (1024,), 0)], data=bytes(64)), "past the end"),
    "offset past EOF": (_gguf(tensors=[_tensor("t", (4,), 0, 2**40)], data=bytes(64)), "past the end"),
    "overlap": (_gguf(tensors=[_tensor("a", (8,)), _tensor("b", (8,), 0, 16)], data=bytes(64)), "overlap"),
    "duplicate tensor": (_gguf(tensors=[_tensor("a", (4,)), _tensor("a", (4,), 0, 32)], data=bytes(64)),
                         "appears twice"),
    "tensor name not UTF-8": (_gguf(tensors=[_tensor(b"\xff\xfe", (4,))], data=bytes(64)), "not UTF-8"),
    "absurd shape": (_gguf(tensors=[_tensor("t", (2**63, 2))], data=bytes(64)), "impossible shape"),
}


@pytest.mark.parametrize("case", list(CORRUPT_GGUF))
def test_corrupt_gguf_header_is_a_model_file_error(tmp_path, case):
    content, phrase = CORRUPT_GGUF[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=phrase) as exc:
        read_header(path)
    assert exc.value.path == str(path) and str(path) in str(exc.value)


def test_the_hand_made_gguf_builder_makes_valid_files(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(_gguf([_kv_u32("general.alignment", 64)], [_tensor("a", (8,)), _tensor("b", (4, 2), 0, 64)],
                           bytes(64 + 32), align=64))
    h = read_header(path)
    assert h.data_offset % 64 == 0 and h.tensors["b"].shape == (2, 4)


def test_truncated_gguf_is_a_model_file_error(tmp_path):
    full = small_gguf(tmp_path / "small.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(full[: len(full) - 100])
    with pytest.raises(ModelFileError, match="past the end of the file"):
        read_header(path)


# --- corrupt safetensors headers, made by hand ---------------------------------------------

def _st(header: object, data: bytes = b"", *, raw: bytes | None = None, length: int | None = None) -> bytes:
    body = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


_T = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
CORRUPT_SAFETENSORS = {
    "header longer than file": (_st({"t": _T}, bytes(16), length=10**6), "nor a safetensors file"),
    "not JSON": (_st(None, raw=b"{not json}"), "not valid JSON"),
    "not UTF-8": (_st(None, raw=b'{"\xff": 1}'), "not valid JSON"),
    "JSON list": (_st([1, 2, 3]), "not an object"),
    "JSON string": (_st("hello"), "not an object"),
    "deep nesting": (_st(None, raw=b"[" * 100000 + b"]" * 100000), "not valid JSON"),
    "entry not an object": (_st({"t": [1, 2]}), "not an object"),
    "unknown dtype": (_st({"t": {**_T, "dtype": "F12"}}, bytes(16)), "unknown dtype 'F12'"),
    "negative dim": (_st({"t": {**_T, "shape": [-2, -2]}}, bytes(16)), "invalid shape"),
    "float dim": (_st({"t": {**_T, "shape": [2.0, 2]}}, bytes(16)), "invalid shape"),
    "bool dim": (_st({"t": {**_T, "shape": [True, 4]}}, bytes(16)), "invalid shape"),
    "shape not a list": (_st({"t": {**_T, "shape": 4}}, bytes(16)), "invalid shape"),
    "missing offsets": (_st({"t": {"dtype": "F32", "shape": [4]}}, bytes(16)), "invalid data_offsets"),
    "offsets out of range": (_st({"t": {**_T, "data_offsets": [0, 1600]}}, bytes(16)), "outside"),
    "offsets reversed": (_st({"t": {**_T, "data_offsets": [16, 0]}}, bytes(16)), "outside"),
    "size disagrees": (_st({"t": {**_T, "shape": [2, 3]}}, bytes(16)), "hold 16 bytes"),
    "overlap": (_st({"a": _T, "b": {**_T, "data_offsets": [8, 24]}}, bytes(24)), "overlap"),
    "duplicate key": (_st(None, raw=b'{"t":' + json.dumps(_T).encode() + b',"t":' + json.dumps(_T).encode() + b"}",
                          data=bytes(16)), "duplicate key"),
    "metadata not strings": (_st({"__metadata__": {"a": 1}}), "__metadata__"),
    "truncated data": (_st({"t": {**_T, "shape": [4, 4], "data_offsets": [0, 64]}}, bytes(16)), "outside"),
    "huge integer": (_st(None, raw=b'{"t":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,16]}}',
                         data=bytes(16)), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(CORRUPT_SAFETENSORS))
def test_corrupt_safetensors_header_is_a_model_file_error(tmp_path, case):
    content, phrase = CORRUPT_SAFETENSORS[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=phrase) as exc:
        read_header(path)
    assert exc.value.path == str(path)


def test_safetensors_header_over_100_mib_is_refused(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(_st(None, raw=b"{", length=200 * 2**20))
        f.truncate(300 * 2**20)  # sparse: no disk used
    with pytest.raises(ModelFileError, match="100 MiB"):
        read_header(path)


# --- fuzzing: random mutations never escape as anything but ModelFileError -------------------

@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    small_gguf(d / "base.gguf")
    # one more GGUF with array and string metadata, which the kit's writer does not produce
    (d / "arrays.gguf").write_bytes(_gguf(
        [_s("names") + struct.pack("<IIQ", 9, 8, 2) + _s("ab") + _s("cde"),
         _s("ints") + struct.pack("<IIQ3i", 9, 5, 3, 1, 2, 3), _kv_u32("general.alignment", 32)],
        [_tensor("a", (8,)), _tensor("b", (64, 2), 2, 32)], bytes(32 + 72)))
    small_safetensors(d / "base.safetensors")
    return d


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    header_end = min(len(buf), 1024)  # the header is where mutations matter
    for pos, value in edits:
        buf[pos % header_end] = value
    if cut is not None:
        del buf[cut % (len(buf) + 1):]
    return bytes(buf)


_edits = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=6)
_cuts = st.none() | st.integers(0, 2**20)
_fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("base", ["base.gguf", "arrays.gguf", "base.safetensors"])
@_fuzz
@given(edits=_edits, cut=_cuts)
def test_mutated_headers_raise_only_model_file_error(fuzz_dir, base, edits, cut):
    path = fuzz_dir / f"mutant-{base}"
    path.write_bytes(_mutate((fuzz_dir / base).read_bytes(), edits, cut))
    try:
        header = read_header(path)
    except ModelFileError as exc:
        assert exc.path == str(path)
        return
    assert isinstance(header, ModelHeader)
    identify(header)  # whatever the header says, classifying it must not fail either


# --- identify ------------------------------------------------------------------------------

def _sparse(tmp_path: Path, name: str, specs: list[TensorSpec], fmt: str = "gguf") -> ModelHeader:
    return read_header(write_model_file(tmp_path / name, specs, format=fmt, sparse=True))


def _prefixed(specs: list[TensorSpec], prefix: str) -> list[TensorSpec]:
    return [TensorSpec(prefix + s.name, s.shape, s.ggml_type, s.init, s.scale) for s in specs]


def test_identify_reports_what_sd_cpp_hard_codes(tmp_path):
    kind = identify(_sparse(tmp_path, "dit.gguf", dit_layout(DitShape(30, 1536, 8960, 16, 16), "q4_0")))
    assert (kind.kind, kind.name, kind.family, kind.supported) == ("dit", "Wan2.1-T2V-1.3B", "wan2.1-t2v-1.3b", True)
    assert (kind.blocks, kind.dim, kind.ffn_dim, kind.num_heads) == (30, 1536, 8960, 12)
    assert (kind.in_channels, kind.out_channels, kind.patch_size) == (16, 16, (1, 2, 2))
    assert (kind.text_dim, kind.freq_dim, kind.has_image_embedding, kind.prefix) == (4096, 256, False, "")


def test_identify_refuses_a_29_block_dit(tmp_path):
    kind = identify(_sparse(tmp_path, "dit29.gguf", dit_layout(DitShape(29, 1536, 8960, 16, 16), "q4_0")))
    assert kind.kind == "dit" and kind.blocks == 29
    assert kind.name is None and kind.family is None and not kind.supported
    assert any("29 transformer blocks" in p and "abort" in p for p in kind.problems)
    assert kind.dim == 1536  # what the file says, for the error message
    assert "29 transformer blocks" in str(kind)


def test_identify_flags_dims_sd_cpp_would_reject(tmp_path):
    kind = identify(_sparse(tmp_path, "odd.gguf", dit_layout(DitShape(30, 2048, 8192, 16, 16), "q8_0")))
    assert kind.name == "Wan2.1-T2V-1.3B" and not kind.supported
    assert any("dim is 2048" in p and "1536" in p for p in kind.problems)


def test_identify_accepts_the_prefixes_sd_cpp_accepts(tmp_path):
    specs = dit_layout(DitShape(30, 1536, 8960, 16, 16), "f16")
    for prefix in ("model.diffusion_model.", "model.high_noise_diffusion_model."):
        kind = identify(_sparse(tmp_path, "p.safetensors", _prefixed(specs, prefix), "safetensors"))
        assert kind.name == "Wan2.1-T2V-1.3B" and kind.prefix == prefix and kind.supported
    kind = identify(_sparse(tmp_path, "q.safetensors", _prefixed(specs, "net."), "safetensors"))
    assert kind.name == "Wan2.1-T2V-1.3B" and not kind.supported and "'net.'" in kind.problems[0]
    vae = identify(_sparse(tmp_path, "v.safetensors", _prefixed(vae_layout("2.1"), "vae."), "safetensors"))
    assert vae.family == "wan2.1-vae" and vae.prefix == "vae." and vae.supported


def test_identify_a_safetensors_dit_folds_5d_like_sd_cpp(tmp_path):
    # sd.cpp tells Wan2.2 TI2V-5B and I2V-A14B apart by patch_embedding's folded size
    ti2v = identify(_sparse(tmp_path, "ti2v.safetensors", dit_layout(DitShape(30, 3072, 14336, 48, 48), "bf16"),
                            "safetensors"))
    assert ti2v.name == "Wan2.2-TI2V-5B" and ti2v.supported
    i2v = identify(_sparse(tmp_path, "i2v.safetensors", dit_layout(DitShape(40, 5120, 13824, 36, 16), "bf16"),
                           "safetensors"))
    assert i2v.name == "Wan2.2-I2V-14B" and i2v.family == "wan2.2-i2v-a14b"


def test_identify_vae_versions_and_decoder_only(tmp_path):
    v22 = identify(_sparse(tmp_path, "v22.safetensors", vae_layout("2.2"), "safetensors"))
    assert (v22.kind, v22.name, v22.z_dim, v22.has_encoder) == ("vae", "Wan2.2-VAE", 48, True)
    decoder_only = [s for s in vae_layout("2.1") if not s.name.startswith(("encoder.", "conv1."))]
    v21 = identify(_sparse(tmp_path, "dec.safetensors", decoder_only, "safetensors"))
    assert (v21.family, v21.z_dim, v21.has_encoder) == ("wan2.1-vae", 16, False)


def test_identify_text_encoders(tmp_path):
    umt5 = identify(_sparse(tmp_path, "umt5.gguf", umt5_xxl_layout("q8_0")))
    assert (umt5.kind, umt5.family, umt5.vocab_size, umt5.blocks, umt5.supported) == \
        ("text_encoder", "umt5-xxl", 256384, 24, True)
    t5 = [TensorSpec("shared.weight", (32128, 4096), "F16", "uniform", 0.1)] + [
        TensorSpec(f"encoder.block.{i}.layer.0.SelfAttention.{p}.weight", (4096, 4096), "F16", "uniform", 0.1)
        for i in range(24) for p in "qkvo"]
    kind = identify(_sparse(tmp_path, "t5.safetensors", t5, "safetensors"))
    assert kind.kind == "text_encoder" and not kind.supported and "umt5-xxl" in kind.problems[0]


def test_identify_unknown_files(tmp_path):
    assert identify(read_header(small_gguf(tmp_path / "s.gguf"))).kind == "unknown"
    sd_vae = [TensorSpec("decoder.conv_in.weight", (512, 4, 3, 3), "F16", "uniform", 0.1)]
    kind = identify(_sparse(tmp_path, "sdvae.safetensors", sd_vae, "safetensors"))
    assert kind.kind == "unknown" and not kind.supported and str(kind).startswith("unknown")


def test_identify_flags_5d_gguf_with_array_metadata(tmp_path):
    # sd.cpp re-reads 5-D GGUFs with its own reader, which misparses array metadata
    path = tmp_path / "arr.gguf"
    path.write_bytes(_gguf([_s("names") + struct.pack("<IIQ", 9, 8, 1) + _s("x")],
                           [_tensor("time_projection.1.weight", (4, 4)), _tensor("p", (2, 2, 1, 4, 4), 0, 64)],
                           bytes(64 + 64 * 4)))
    kind = identify(read_header(path))
    assert any("array metadata" in p for p in kind.problems)
