"""Fuzzing the header reader used by the pre-flight and the model kit (``wanpy.headers``).

Hypothesis builds GGUF and safetensors files field by field (counts, metadata of every
value type, tensor tables with Wan tensor names, shapes, ggml types and offsets) and lets
any field lie (counts, lengths, offsets, sizes, JSON); test_model_files.py mutates the bytes
of finished files instead. Either way ``read_header`` may only return a header that agrees
with the file or raise ``ModelFileError`` naming the file, and ``identify`` must classify
whatever ``read_header`` returned. ``WANPY_FUZZ_EXAMPLES`` sets the examples per test (300
here; ``bench/fuzz_headers.py`` runs a longer campaign).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wanpy.errors import ModelFileError
from wanpy.headers import GGML_TYPES, ModelHeader, read_header
from wanpy.identify import identify

EXAMPLES = int(os.environ.get("WANPY_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Names that steer identify() into each of its branches, with the prefixes sd.cpp knows and one it does not.
PREFIXES = ["", "model.diffusion_model.", "model.high_noise_diffusion_model.", "vae.", "first_stage_model.",
            "text_encoders.t5xxl.transformer.", "cond_stage_model.transformer.", "junk."]
STEMS = [
    "time_projection.1.weight", "blocks.{i}.cross_attn.norm_k.weight", "blocks.{i}.self_attn.q.weight",
    "blocks.{i}.ffn.0.weight", "patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
    "head.head.weight", "img_emb.proj.0.weight", "img_emb.emb_pos", "vace_blocks.{i}.proj.weight",
    "decoder.middle.1.to_qkv.weight", "decoder.conv1.weight", "decoder.head.2.weight", "encoder.conv1.weight",
    "conv1.weight", "encoder.block.{i}.layer.0.SelfAttention.q.weight", "enc.blk.{i}.attn_q.weight",
    "enc.blk.{i}.attn_rel_b.weight", "shared.weight", "token_embd.weight",
    "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight",
    "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight",
    "vision_model.encoder.layers.{i}.self_attn.q_proj.weight", "vision_model.embeddings.patch_embedding.weight",
    "vision_model.encoder.layers.{i}.mlp.fc1.weight", "visual_projection.weight", "blocks", "blocks.",
]
INDICES = ["0", "1", "29", "39", "40", "-1", "x", "", "99999999999999999999999"]
DIMS = [1, 2, 3, 4, 5, 12, 16, 32, 36, 48, 64, 128, 256, 1280, 1536, 4096, 5120, 0, 2**31, 2**40, 2**62, 2**64 - 1]


def _rarely(draw: st.DrawFn, one_in: int = 10) -> bool:
    return draw(st.integers(0, one_in - 1)) == 0


@st.composite
def tensor_names(draw: st.DrawFn, prefix: str) -> str:
    if _rarely(draw, 20):
        return draw(st.text(max_size=40))
    stem = draw(st.sampled_from(STEMS)).replace("{i}", draw(st.sampled_from(INDICES)))
    return (draw(st.sampled_from(PREFIXES)) if _rarely(draw) else prefix) + stem


def _lie(draw: st.DrawFn, true: int, *, bits: int = 64) -> int:
    """Mostly the true value, sometimes a nearby or absurd one (within the field's width)."""
    true = min(true, 2**bits - 1)
    choice = draw(st.integers(0, 39))
    if choice < 36:
        return true
    if choice < 39:
        return max(0, min(2**bits - 1, true + draw(st.integers(-3, 3))))
    return draw(st.integers(0, 2**bits - 1))


# --- GGUF ----------------------------------------------------------------------------------------
def _gguf_str(data: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(data) if length is None else length) + data


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@st.composite
def gguf_value(draw: st.DrawFn, vtype: int, depth: int = 0) -> bytes:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        size = struct.calcsize(fmt)
        return draw(st.binary(min_size=size, max_size=size))
    if vtype == 8:
        raw = draw(st.text(max_size=20)).encode("utf-8", "surrogatepass") if draw(st.booleans()) \
            else draw(st.binary(max_size=20))
        return _gguf_str(raw, _lie(draw, len(raw)))
    if vtype == 9 and depth == 0:
        etype = draw(st.sampled_from([0, 4, 6, 8, 9, 10, 12, 13]))
        items = draw(st.lists(gguf_value(etype, depth + 1) if etype in _SCALARS or etype in (8, 9)
                              else st.binary(max_size=8), max_size=5))
        return struct.pack("<IQ", etype, _lie(draw, len(items))) + b"".join(items)
    return draw(st.binary(max_size=16))  # an unknown type, or an array of arrays


@st.composite
def gguf_files(draw: st.DrawFn) -> tuple[bytes, int]:
    """(header bytes, the file's total size): the data region is a hole the test appends."""
    version = draw(st.sampled_from([1, 2, 4, 0x03000000])) if _rarely(draw) else 3
    kvs = []
    for i in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(["general.alignment", "", "k", "k"]) if _rarely(draw)
                   else st.just(f"general.key{i}")).encode("utf-8", "surrogatepass")
        vtype = draw(st.integers(0, 20)) if _rarely(draw) else draw(st.sampled_from([0, 4, 5, 6, 7, 8, 9, 10, 12]))
        if key == b"general.alignment" and draw(st.booleans()):
            vtype, value = 4, struct.pack("<I", draw(st.sampled_from([1, 16, 32, 64, 0, 3, 2**31])))
        else:
            value = draw(gguf_value(vtype))
        kvs.append(_gguf_str(key) + struct.pack("<I", vtype) + value)
    alignment = 32
    infos, offset = [], 0
    prefix = draw(st.sampled_from(PREFIXES))
    for _ in range(draw(st.integers(0, 8))):
        name = draw(tensor_names(prefix)).encode("utf-8", "surrogatepass")
        ne = draw(st.lists(st.sampled_from(DIMS if _rarely(draw) else DIMS[:16]), min_size=1, max_size=5))
        n_dims = draw(st.sampled_from([0, 9, 2**31])) if _rarely(draw, 20) else len(ne)
        if _rarely(draw):
            type_id = draw(st.sampled_from(sorted(GGML_TYPES)) | st.integers(0, 50))
        else:
            type_id = draw(st.sampled_from([0, 1]))
        block, size = GGML_TYPES.get(type_id, ("", 1, 1))[1:]
        count = 1
        for d in ne:
            count *= d
        nbytes = count // block * size
        rel = _lie(draw, offset)
        offset = -(-(offset + nbytes) // alignment) * alignment
        infos.append(_gguf_str(name) + struct.pack("<I", n_dims) + b"".join(struct.pack("<Q", d) for d in ne)
                     + struct.pack("<IQ", type_id, rel))
    head = b"GGUF" + struct.pack("<IQQ", version, _lie(draw, len(infos)), _lie(draw, len(kvs)))
    header = head + b"".join(kvs) + b"".join(infos)
    data_start = -(-len(header) // alignment) * alignment
    total = _lie(draw, data_start + offset, bits=40)
    if _rarely(draw, 20):  # cut the header itself
        header = header[:draw(st.integers(0, len(header)))]
        total = len(header)
    return header, total


# --- safetensors ---------------------------------------------------------------------------------
ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I64": 8, "I32": 4, "I8": 1, "U8": 1,
             "BOOL": 1, "U16": 2}
JSON_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                      st.text(max_size=8), st.lists(st.integers(-5, 5), max_size=3))


@st.composite
def safetensors_files(draw: st.DrawFn) -> tuple[bytes, int]:
    entries: dict[str, object] = {}
    offset = 0
    prefix = draw(st.sampled_from(PREFIXES))
    for _ in range(draw(st.integers(0, 8))):
        name = draw(tensor_names(prefix))
        dtype = draw(st.text(max_size=5)) if _rarely(draw, 20) else draw(st.sampled_from(sorted(ST_DTYPES)))
        shape: object = draw(st.lists(st.sampled_from(DIMS[:16]), max_size=6))
        nbytes = ST_DTYPES.get(dtype, 1)
        for d in shape:  # type: ignore[union-attr]
            nbytes *= d
        offsets: object = [offset, offset + nbytes]
        if _rarely(draw, 20):
            shape = draw(JSON_JUNK)
        if _rarely(draw, 20):
            offsets = [_lie(draw, offset, bits=40), _lie(draw, offset + nbytes, bits=40)]
        if _rarely(draw, 40):
            offsets = draw(JSON_JUNK)
        entry = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        entries[name] = draw(JSON_JUNK) if _rarely(draw, 40) else entry
        offset += nbytes
    if draw(st.booleans()):
        values = st.text(max_size=5) | JSON_JUNK if _rarely(draw) else st.text(max_size=5)
        entries["__metadata__"] = draw(st.dictionaries(st.text(max_size=5), values, max_size=3))
    text = json.dumps(entries, ensure_ascii=not _rarely(draw))
    choice = draw(st.integers(0, 39))
    if choice == 0:
        text = text[:draw(st.integers(0, len(text)))]
    elif choice == 1 and len(entries) > 1:
        text = text.replace('{"', '{"dup": 1, "dup": 2, "', 1)  # duplicate keys
    raw = text.encode("utf-8", "surrogatepass")
    if _rarely(draw, 40):
        raw += draw(st.binary(min_size=1, max_size=8))
    header = struct.pack("<Q", _lie(draw, len(raw))) + raw
    return header, _lie(draw, len(header) + offset, bits=40)


# --- the properties ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="wanpy-fuzz-") as d:
        yield Path(d)


def _write(path: Path, header: bytes, total: int) -> None:
    with open(path, "wb") as f:
        f.write(header)
        if total > len(header):
            f.truncate(min(total, 2**40))  # a hole: no disk used, whatever the header claims


def _read_and_identify(path: Path) -> ModelHeader | None:
    try:
        header = read_header(path)
    except ModelFileError as exc:
        assert exc.path == str(path) and str(exc).startswith(str(path)), exc
        return None
    for t in header.tensors.values():
        assert header.data_offset <= t.offset and t.offset + t.nbytes <= header.file_size, t
    kind = identify(header)
    str(kind)
    assert isinstance(kind.supported, bool)
    return header


@FUZZ
@given(gguf_files())
def test_built_gguf_files_read_or_raise_model_file_error(scratch, built):
    _write(scratch / "f.gguf", *built)
    _read_and_identify(scratch / "f.gguf")


@FUZZ
@given(safetensors_files())
def test_built_safetensors_files_read_or_raise_model_file_error(scratch, built):
    _write(scratch / "f.safetensors", *built)
    _read_and_identify(scratch / "f.safetensors")


@FUZZ
@given(st.sampled_from([b"GGUF", b"GGUF\x03\x00\x00\x00", b"PK\x03\x04", b""]), st.binary(max_size=512))
def test_random_bytes_read_or_raise_model_file_error(scratch, magic, tail):
    _write(scratch / "r.bin", magic + tail, len(magic) + len(tail))
    if magic + tail:
        _read_and_identify(scratch / "r.bin")
    else:
        with pytest.raises(ModelFileError, match="the file is empty"):
            read_header(scratch / "r.bin")


@pytest.mark.parametrize("field", ["key", "string value", "array"])
def test_a_corrupt_length_in_a_huge_file_is_not_read_into_memory(scratch, field):
    # Found by the fuzzer: a length below the file size but far beyond any real field made the
    # reader allocate it (GBs in a multi-GB model file) before failing.
    kv = {"key": struct.pack("<Q", 3 * 2**30),
          "string value": _gguf_str(b"general.name") + struct.pack("<IQ", 8, 3 * 2**30),
          "array": _gguf_str(b"general.tokens") + struct.pack("<IIQ", 9, 4, 2**30)}[field]
    _write(scratch / "huge.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv, 2**36)
    with pytest.raises(ModelFileError, match=r"claims \d+ (bytes|array elements); no real GGUF"):
        read_header(scratch / "huge.gguf")
