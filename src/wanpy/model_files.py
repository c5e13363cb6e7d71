"""Header-only reading of GGUF and safetensors model files, and what sd.cpp will make of them.

``read_header`` parses a file's header (tensor names, shapes, types, offsets, metadata)
without touching the tensor data, so it takes milliseconds even on a 14B model, and it
checks everything the header claims against the file: a truncated, corrupt or lying
header raises ``ModelFileError`` saying which file and what is wrong.

``identify`` classifies a header the way stable-diffusion.cpp does (``src/model.cpp``'s
version detection and ``src/wan.hpp``'s ``WanRunner``): which Wan DiT, VAE, text encoder
or CLIP vision model it is, with the hyper-parameters sd.cpp will build, and the problems
that would make sd.cpp fail (or abort the process) when it loads the file.

Shapes are always given in row-major (NumPy / PyTorch) order: the order safetensors
stores, and for GGUF ggml's ``ne`` order reversed (the way gguf-py presents NumPy
shapes). ``TensorInfo.ne`` gives ggml's order.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wanpy.errors import ModelFileError

__all__ = ["ACCEPTED_PREFIXES", "GGML_TYPES", "ModelHeader", "ModelKind", "TensorInfo", "identify", "identify_file",
           "read_header", "read_header_cached"]

# ggml types as the pinned ggml (ggml/include/ggml.h) numbers them: id -> (name, block size,
# bytes per block). Kept here (not imported from gguf-py) so reading a header imports nothing heavy.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36),
}

# safetensors dtype -> bytes per element (sd.cpp converts F64/I64/F8 on load; U8 tensors it skips).
_SAFETENSORS_DTYPES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}

_GGUF_MAGIC = b"GGUF"
_GGUF_DEFAULT_ALIGNMENT = 32
_GGUF_MAX_NDIMS = 8  # ggml itself stops at 4; real Wan GGUFs carry 5-D conv weights
_ST_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
# A corrupt length inside a multi-GB file would otherwise be read into memory (ggml's own
# reader only checks lengths against the file size): real GGUF strings are at most a few
# hundred KB (chat templates), real arrays a few hundred thousand elements (vocabularies).
_GGUF_MAX_STRING = 16 << 20
_GGUF_MAX_ARRAY = 16 << 20
_READ_CHUNK = 1 << 20

# GGUF metadata value types: id -> (name, struct format or None for string/array)
_GGUF_VALUE_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"),
    4: ("uint32", "<I"), 5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<?"),
    8: ("string", None), 9: ("array", None), 10: ("uint64", "<Q"), 11: ("int64", "<q"),
    12: ("float64", "<d"),
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it.

    ``shape`` is row-major (NumPy/PyTorch) order; ``dtype`` the ggml type name for GGUF
    ("F16", "Q4_0", "Q4_K", ...) or the safetensors dtype ("F16", "BF16", "F32", "F8_E4M3",
    ...; F16/BF16/F32 are spelled the same in both). ``offset`` is absolute in the file.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int

    @property
    def ne(self) -> tuple[int, ...]:
        """The shape in ggml's order (fastest-varying dimension first)."""
        return tuple(reversed(self.shape))

    @property
    def nelements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelHeader:
    """A model file's header: its tensors in file order, its metadata, where data starts."""

    path: str
    format: str  # "gguf" or "safetensors"
    tensors: dict[str, TensorInfo]
    metadata: dict[str, Any]
    data_offset: int
    file_size: int

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data the header describes."""
        return sum(t.nbytes for t in self.tensors.values())

    def __str__(self) -> str:
        return (f"{self.format} file {self.path}: {len(self.tensors)} tensors, "
                f"{self.nbytes / 2**30:.2f} GiB of tensor data")


def read_header(path: str | os.PathLike[str]) -> ModelHeader:
    """Read and check the header of a GGUF or safetensors file (no tensor data is read).

    Raises FileNotFoundError for a missing file, IsADirectoryError for a directory, and
    ModelFileError (with ``.path``) for anything that is not a well-formed GGUF or
    safetensors header consistent with the file's size.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a model file", path)
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        reader = _Reader(f, path, file_size)
        if file_size == 0:
            raise reader.error("the file is empty")
        magic = reader.peek(8)
        if magic[:4] == _GGUF_MAGIC:
            return _read_gguf(reader)
        if magic[:4] == b"PK\x03\x04":
            raise reader.error("this is a PyTorch zip checkpoint (.pt/.ckpt); wanpy reads GGUF and safetensors")
        if len(magic) == 8 and 0 < struct.unpack("<Q", magic)[0] <= file_size - 8:
            return _read_safetensors(reader)
        raise reader.error("not a GGUF file (no 'GGUF' magic) nor a safetensors file (its first 8 bytes "
                           "are not the length of a header that fits in the file)")


class _Reader:
    """Reads the front of a file on demand, and checks every length against the file size."""

    def __init__(self, f: Any, path: str, file_size: int) -> None:
        self._f = f
        self.path = path
        self.file_size = file_size
        self._buf = b""
        self.pos = 0

    def error(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {what}", path=self.path)

    def _fill(self, end: int) -> None:
        if end > len(self._buf):
            want = max(end - len(self._buf), _READ_CHUNK, len(self._buf))
            self._buf += self._f.read(want)

    def peek(self, n: int) -> bytes:
        self._fill(self.pos + n)
        return self._buf[self.pos:self.pos + n]

    def remaining(self) -> int:
        return self.file_size - self.pos

    def read(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining():
            raise self.error(f"{what} needs {n} bytes at offset {self.pos}, but the file ends at "
                             f"{self.file_size} (truncated or corrupt)")
        self._fill(self.pos + n)
        data = self._buf[self.pos:self.pos + n]
        if len(data) != n:
            raise self.error(f"{what}: the file is shorter than it claims (read {len(data)} of {n} bytes)")
        self.pos += n
        return data

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]


# --- GGUF -----------------------------------------------------------------------------------

def _gguf_string(r: _Reader, what: str) -> str:
    n = r.unpack("<Q", f"the length of {what}")
    if _GGUF_MAX_STRING < n <= r.remaining():  # past the end of the file: r.read() says so
        raise r.error(f"{what} at offset {r.pos - 8} claims {n} bytes; no real GGUF string is longer than "
                      f"{_GGUF_MAX_STRING} (corrupt length)")
    raw = r.read(n, f"{what} ({n} bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise r.error(f"{what} at offset {r.pos - n} is not UTF-8") from None


def _gguf_value(r: _Reader, vtype: int, key: str, depth: int = 0) -> Any:
    spec = _GGUF_VALUE_TYPES.get(vtype)
    if spec is None:
        raise r.error(f"metadata {key!r} has unknown value type {vtype}")
    name, fmt = spec
    if fmt is not None:
        return r.unpack(fmt, f"metadata {key!r}")
    if name == "string":
        return _gguf_string(r, f"metadata {key!r}")
    if depth:
        raise r.error(f"metadata {key!r} is an array of arrays, which ggml cannot read")
    etype = r.unpack("<I", f"metadata {key!r} array type")
    count = r.unpack("<Q", f"metadata {key!r} array length")
    espec = _GGUF_VALUE_TYPES.get(etype)
    if espec is None:
        raise r.error(f"metadata {key!r} is an array of unknown value type {etype}")
    efmt = espec[1]
    min_size = struct.calcsize(efmt) if efmt is not None else (8 if espec[0] == "string" else 12)
    if count > r.remaining() // min_size:
        raise r.error(f"metadata {key!r} claims {count} array elements, more than the "
                      f"{r.remaining()} bytes left in the file can hold")
    if count > _GGUF_MAX_ARRAY:
        raise r.error(f"metadata {key!r} claims {count} array elements; no real GGUF array has more than "
                      f"{_GGUF_MAX_ARRAY} (corrupt length)")
    if efmt is not None:
        size = struct.calcsize(efmt)
        raw = r.read(count * size, f"metadata {key!r} array")
        return list(struct.unpack(f"<{count}{efmt[1]}", raw))
    return [_gguf_value(r, etype, key, depth + 1) for _ in range(count)]


def _read_gguf(r: _Reader) -> ModelHeader:
    r.read(4, "the magic")
    version = r.unpack("<I", "the GGUF version")
    if version not in (2, 3):
        if version & 0xFFFF == 0 and version >> 16:
            raise r.error("this is a big-endian GGUF file; sd.cpp (and wanpy) read little-endian GGUF only")
        raise r.error(f"unsupported GGUF version {version} (sd.cpp reads versions 2 and 3)")
    n_tensors = r.unpack("<Q", "the tensor count")
    n_kv = r.unpack("<Q", "the metadata count")
    # Each metadata entry takes at least 13 bytes, each tensor info at least 24.
    if n_kv > r.remaining() // 13:
        raise r.error(f"the header claims {n_kv} metadata entries; the file is too short for that")
    if n_tensors > r.remaining() // 24:
        raise r.error(f"the header claims {n_tensors} tensors; the file is too short for that")

    metadata: dict[str, Any] = {}
    alignment = _GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = _gguf_string(r, "a metadata key")
        if not key:
            raise r.error("a metadata key is empty (ggml aborts the process on that)")
        vtype = r.unpack("<I", f"the type of metadata {key!r}")
        if key in metadata:
            raise r.error(f"metadata key {key!r} appears twice")
        metadata[key] = _gguf_value(r, vtype, key)
        if key == "general.alignment":
            # ggml reads it as a uint32 and aborts the process on any other type
            alignment = metadata[key]
            if vtype != 4 or alignment == 0 or alignment & (alignment - 1):
                raise r.error(f"general.alignment is {_GGUF_VALUE_TYPES[vtype][0]} {alignment!r}; "
                              "it must be a uint32 power of two")

    infos: list[tuple[str, tuple[int, ...], str, int, int]] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        name = _gguf_string(r, f"the name of tensor #{i}")
        if name in seen:
            raise r.error(f"tensor {name!r} appears twice")
        seen.add(name)
        n_dims = r.unpack("<I", f"the dimension count of tensor {name!r}")
        if n_dims > _GGUF_MAX_NDIMS:
            raise r.error(f"tensor {name!r} claims {n_dims} dimensions (at most {_GGUF_MAX_NDIMS} make sense)")
        ne = struct.unpack(f"<{n_dims}Q", r.read(8 * n_dims, f"the shape of tensor {name!r}"))
        if any(d >= 2**62 for d in ne):
            raise r.error(f"tensor {name!r} has an impossible shape {list(ne)} (ggml order)")
        if 0 in ne:
            # ggml's reader divides by the dimensions: a zero crashes the process
            raise r.error(f"tensor {name!r} has a zero-sized dimension {list(ne)} (ggml order)")
        type_id = r.unpack("<I", f"the type of tensor {name!r}")
        if type_id not in GGML_TYPES:
            raise r.error(f"tensor {name!r} has ggml type {type_id}, which this sd.cpp's ggml does not know")
        tname, block, type_size = GGML_TYPES[type_id]
        rel = r.unpack("<Q", f"the data offset of tensor {name!r}")
        row = ne[0] if ne else 1
        if row % block:
            raise r.error(f"tensor {name!r} of type {tname} has rows of {row} elements, "
                          f"not a multiple of its block size {block}")
        nbytes = math.prod(ne) // block * type_size
        infos.append((name, tuple(reversed(ne)), tname, rel, nbytes))

    data_offset = -(-r.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, shape, tname, rel, nbytes in infos:
        offset = data_offset + rel
        if offset + nbytes > r.file_size:
            raise r.error(f"tensor {name!r} ({tname} {list(shape)}, {nbytes} bytes at offset {offset}) "
                          f"runs past the end of the file ({r.file_size} bytes): truncated or corrupt")
        tensors[name] = TensorInfo(name, shape, tname, offset, nbytes)
    _check_overlaps(r, tensors.values())
    return ModelHeader(r.path, "gguf", tensors, metadata, data_offset, r.file_size)


def _check_overlaps(r: _Reader, tensors: Any) -> None:
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors if t.nbytes)
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise r.error(f"the data of tensors {a!r} and {b!r} overlap")


# --- safetensors ----------------------------------------------------------------------------

def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_safetensors(r: _Reader) -> ModelHeader:
    header_len = r.unpack("<Q", "the safetensors header length")
    if header_len > _ST_MAX_HEADER:
        raise r.error(f"the safetensors header claims {header_len} bytes (more than the 100 MiB limit)")
    raw = r.read(header_len, f"the safetensors JSON header ({header_len} bytes)")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise r.error(f"the safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise r.error(f"the safetensors header is a JSON {type(header).__name__}, not an object")

    data_offset = 8 + header_len
    data_size = r.file_size - data_offset
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise r.error("the safetensors __metadata__ is not a map of strings to strings")

    entries = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise r.error(f"tensor {name!r}: its header entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
            raise r.error(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise r.error(f"tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise r.error(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise r.error(f"tensor {name!r} has data_offsets [{begin}, {end}] outside the "
                          f"{data_size} bytes of data in the file (truncated or corrupt)")
        nbytes = math.prod(shape) * _SAFETENSORS_DTYPES[dtype]
        if nbytes != end - begin:
            raise r.error(f"tensor {name!r} is {dtype} {shape} ({nbytes} bytes) but its data_offsets "
                          f"[{begin}, {end}] hold {end - begin} bytes")
        entries.append(TensorInfo(name, tuple(shape), dtype, data_offset + begin, nbytes))

    entries.sort(key=lambda t: (t.offset, t.name))
    tensors = {t.name: t for t in entries}
    _check_overlaps(r, entries)
    return ModelHeader(r.path, "safetensors", tensors, dict(metadata), data_offset, r.file_size)


# --- identification -------------------------------------------------------------------------

# What sd.cpp hard-codes for each Wan DiT it recognises (src/wan.hpp, WanRunner).
_SDCPP_DIT = {
    "Wan2.1-T2V-1.3B": dict(dim=1536, ffn_dim=8960, num_heads=12, in_channels=16, out_channels=16),
    "Wan2.1-I2V-1.3B": dict(dim=1536, ffn_dim=8960, num_heads=12, in_channels=36, out_channels=16),
    "Wan2.1-VACE-1.3B": dict(dim=1536, ffn_dim=8960, num_heads=12, in_channels=16, out_channels=16),
    "Wan2.2-TI2V-5B": dict(dim=3072, ffn_dim=14336, num_heads=24, in_channels=48, out_channels=48),
    "Wan2.x-T2V-14B": dict(dim=5120, ffn_dim=13824, num_heads=40, in_channels=16, out_channels=16),
    "Wan2.x-VACE-14B": dict(dim=5120, ffn_dim=13824, num_heads=40, in_channels=16, out_channels=16),
    "Wan2.2-I2V-14B": dict(dim=5120, ffn_dim=13824, num_heads=40, in_channels=36, out_channels=16),
    "Wan2.1-I2V-14B": dict(dim=5120, ffn_dim=13824, num_heads=40, in_channels=36, out_channels=16),
    "Wan2.1-FLF2V-14B": dict(dim=5120, ffn_dim=13824, num_heads=40, in_channels=36, out_channels=16),
}

# sd.cpp name -> the wanpy families (wanpy.families.FAMILIES) a file of that shape can belong to.
# A 40-block T2V DiT is Wan2.1-T2V-14B or either expert of Wan2.2-T2V-A14B: the tensors are the same.
_FAMILIES_OF = {
    "Wan2.1-T2V-1.3B": ("wan2.1-t2v-1.3b",),
    "Wan2.2-TI2V-5B": ("wan2.2-ti2v-5b",),
    "Wan2.x-T2V-14B": ("wan2.1-t2v-14b", "wan2.2-t2v-a14b"),
    "Wan2.2-I2V-14B": ("wan2.2-i2v-a14b",),
    "Wan2.1-I2V-14B": ("wan2.1-i2v-14b",),
    "Wan2.1-FLF2V-14B": ("wan2.1-flf2v-14b",),
    "Wan2.1-I2V-1.3B": (),
    "Wan2.1-VACE-1.3B": (),
    "Wan2.x-VACE-14B": (),
}

# Prefixes sd.cpp accepts, per argument it is given as (src/stable-diffusion.cpp prefixes
# names that do not already start with its prefix; name_conversion.cpp maps "vae." to
# "first_stage_model."). "" means the original names with no prefix.
ACCEPTED_PREFIXES: dict[str, tuple[str, ...]] = {
    "diffusion_model": ("", "model.diffusion_model."),
    "high_noise_diffusion_model": ("", "model.high_noise_diffusion_model."),
    "vae": ("", "vae."),
    "text_encoder": ("", "text_encoders.t5xxl.transformer."),
    "clip_vision": ("", "cond_stage_model.transformer."),
}

_UMT5_VOCAB = 256384


@dataclass(frozen=True)
class ModelKind:
    """What a model file is, as sd.cpp will see it.

    ``kind`` is "dit", "vae", "text_encoder", "clip_vision" or "unknown". ``name`` is
    sd.cpp's own name for it ("Wan2.1-T2V-1.3B", "Wan2.x-T2V-14B", "Wan2.1-VAE", "umt5-xxl",
    ...), None when sd.cpp would not recognise it. ``family`` is the wanpy family
    (``wanpy.families.FAMILIES``) or component family ("wan2.1-vae", "wan2.2-vae",
    "umt5-xxl", "clip-vision-h"); ``families`` lists every family a file of these shapes
    can belong to (a 40-block T2V DiT is Wan2.1-T2V-14B *or* an expert of Wan2.2-T2V-A14B:
    ``family`` is then the single-expert reading, and the caller decides from whether a
    high-noise expert is given). ``problems`` says why sd.cpp would fail to load it or abort
    on it (e.g. a DiT with 29 blocks); ``supported`` is True when there are none.

    Hyper-parameters (None where they do not apply): ``blocks`` (DiT blocks, T5 or CLIP
    layers), ``dim``, ``ffn_dim``, ``num_heads``, ``in_channels`` and ``out_channels`` (DiT
    latent channels in/out), ``patch_size`` (t, h, w), ``text_dim``, ``freq_dim``,
    ``has_image_embedding`` (Wan2.1 I2V/FLF2V ``img_emb``: needs CLIP vision),
    ``vace_blocks``, ``z_dim`` (VAE latent channels), ``has_encoder`` (VAE encoder
    weights present: sd.cpp's video mode needs them), ``vocab_size`` (text encoder).
    ``prefix`` is the tensor-name prefix found ("" or e.g. "model.diffusion_model.");
    ``components`` every kind found in the file (an all-in-one checkpoint has several).
    """

    kind: str
    name: str | None = None
    family: str | None = None
    families: tuple[str, ...] = ()
    prefix: str = ""
    components: tuple[str, ...] = ()
    blocks: int | None = None
    dim: int | None = None
    ffn_dim: int | None = None
    num_heads: int | None = None
    in_channels: int | None = None
    out_channels: int | None = None
    patch_size: tuple[int, int, int] | None = None
    text_dim: int | None = None
    freq_dim: int | None = None
    has_image_embedding: bool = False
    vace_blocks: int = 0
    z_dim: int | None = None
    has_encoder: bool | None = None
    vocab_size: int | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def supported(self) -> bool:
        return self.kind != "unknown" and self.name is not None and not self.problems

    def __str__(self) -> str:
        if self.kind == "unknown":
            return "unknown model (not a Wan DiT, Wan VAE, umt5-xxl or CLIP ViT-H file)"
        parts = [f"{self.kind} {self.name or '(not recognised by sd.cpp)'}"]
        for label, value in (("blocks", self.blocks), ("dim", self.dim), ("ffn", self.ffn_dim),
                             ("heads", self.num_heads), ("in", self.in_channels), ("out", self.out_channels),
                             ("z_dim", self.z_dim), ("vocab", self.vocab_size)):
            if value is not None:
                parts.append(f"{label} {value}")
        if self.has_image_embedding:
            parts.append("image embedding")
        if self.has_encoder is not None:
            parts.append("with encoder" if self.has_encoder else "decoder only")
        text = ", ".join(parts)
        if self.problems:
            text += "; problems: " + "; ".join(self.problems)
        return text


def _sdcpp_ne(t: TensorInfo, fmt: str) -> tuple[int, ...]:
    """The 4-D ggml ne sd.cpp stores for a tensor (it folds 5-D shapes; src/model_io/)."""
    shape = list(t.shape)
    if fmt == "safetensors":
        if len(shape) == 5:
            shape = [shape[0] * shape[1]] + shape[2:]
        ne = list(reversed(shape))
    else:
        ne = list(reversed(shape))
        if len(ne) > 4:
            ne = ne[:3] + [math.prod(ne[3:])]
    return tuple(ne + [1] * (4 - len(ne)))


def _atoi(s: str) -> int:
    m = re.match(r"\s*[+-]?\d+", s)
    return int(m.group()) if m else 0


def _find_prefix(names: list[str], *markers: str) -> str | None:
    """The prefix of the first name ending with one of the markers ("" is a prefix too)."""
    for n in names:
        for marker in markers:
            if n.endswith(marker):
                return n[: len(n) - len(marker)]
    return None


def identify(header: ModelHeader) -> ModelKind:
    """Classify a model file the way sd.cpp would (see ``ModelKind``)."""
    names = list(header.tensors)
    found = {
        "dit": _find_prefix(names, "time_projection.1.weight"),
        "vae": _find_prefix(names, "decoder.middle.1.to_qkv.weight"),
        "text_encoder": _find_prefix(names, "encoder.block.0.layer.0.SelfAttention.q.weight",
                                     "enc.blk.0.attn_q.weight"),
        "clip_vision": _find_prefix(names, "vision_model.encoder.layers.0.self_attn.q_proj.weight"),
    }
    components = tuple(k for k, p in found.items() if p is not None)
    file_problems = _sdcpp_file_problems(header)
    if not components:
        return ModelKind("unknown", problems=file_problems)
    main = components[0]
    prefix = found[main]
    assert prefix is not None
    identify_main = {"dit": _identify_dit, "vae": _identify_vae, "text_encoder": _identify_text_encoder,
                     "clip_vision": _identify_clip_vision}[main]
    kind = identify_main(header, prefix, components)
    if file_problems:
        kind = dataclasses.replace(kind, problems=file_problems + kind.problems)
    return kind


def _version(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """A file version's key: path, size, mtime."""
    p = os.fspath(path)
    st = os.stat(p)
    return p, st.st_size, st.st_mtime_ns


def read_header_cached(path: str | os.PathLike[str]) -> ModelHeader:
    """``read_header(path)``, read once per version of the file (path, size, mtime). The
    header is shared between callers: do not modify it."""
    return _header_version(*_version(path))


def identify_file(path: str | os.PathLike[str]) -> ModelKind:
    """``identify(read_header(path))``, once per version of the file (path, size, mtime)."""
    return _identify_version(*_version(path))


@functools.lru_cache(maxsize=16)
def _header_version(path: str, size: int, mtime_ns: int) -> ModelHeader:
    return read_header(path)


@functools.lru_cache(maxsize=64)
def _identify_version(path: str, size: int, mtime_ns: int) -> ModelKind:
    return identify(_header_version(path, size, mtime_ns))


# Types ggml has no CPU dot product for. sd.cpp gives a Linear weight (and the DiT modulation)
# its file's type, so the first matmul with one calls a NULL function: SIGSEGV mid-sampling
# (measured: I8, I32, F64, Q8_1, Q8_K). Safetensors F64 is converted to F32 on load; I64 to I32.
_NO_COMPUTE_TYPES = {"gguf": frozenset({"F64", "I8", "I16", "I32", "I64", "Q8_1", "Q8_K"}),
                     "safetensors": frozenset({"I8", "I16", "I32", "I64"})}


def _sdcpp_file_problems(h: ModelHeader) -> tuple[str, ...]:
    """What sd.cpp's readers (src/model_io/) cannot cope with in a well-formed file."""
    problems = []
    no_compute = _NO_COMPUTE_TYPES[h.format]
    for t in h.tensors.values():
        if t.dtype in no_compute and t.name.endswith((".weight", "modulation")):
            problems.append(f"tensor {t.name!r} is {t.dtype}, a type ggml cannot compute with: sd.cpp would "
                            "crash (SIGSEGV) at the first step that uses it; convert the file to float or "
                            "quantized weights")
            break
    if h.format == "gguf":
        # ggml rejects >4-D tensors; sd.cpp then re-reads the file with its own GGUFReader,
        # which misparses array metadata (it expects a key before every element).
        if any(len(t.shape) > 4 for t in h.tensors.values()):
            arrays = [k for k, v in h.metadata.items() if isinstance(v, list)]
            if arrays:
                problems.append(f"5-D tensors together with array metadata ({arrays[0]!r}): sd.cpp's fallback "
                                "GGUF reader misreads such files")
            long_keys = [k for k in h.metadata if len(k.encode()) > 4096]
            if long_keys:
                problems.append("a metadata key longer than 4096 bytes: sd.cpp's fallback GGUF reader refuses it")
    else:
        for t in h.tensors.values():
            if len(t.shape) > 5:
                problems.append(f"tensor {t.name!r} has {len(t.shape)} dimensions; sd.cpp reads at most 5")
                break
        bad = sorted({t.dtype for t in h.tensors.values()} - {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2",
                                                               "I64", "I32", "U8"})
        if bad:
            problems.append(f"safetensors dtype {bad[0]} is not supported by sd.cpp")
    return tuple(problems)


def _identify_dit(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in ("", "model.diffusion_model.", "model.high_noise_diffusion_model."):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects original Wan names with no prefix "
                        "or 'model.diffusion_model.'")

    # src/model.cpp get_sd_version()
    is_wan = p + "blocks.0.cross_attn.norm_k.weight" in t
    patch = t.get(p + "patch_embedding.weight")
    patch_channels = _sdcpp_ne(patch, h.format)[3] if patch is not None else 0
    has_img_emb = any(n.startswith(p + "img_emb") for n in t)
    version = "WAN2"
    if patch_channels == 184320 and not has_img_emb:
        version = "WAN2_2_I2V"
    elif patch_channels == 147456 and not has_img_emb:
        version = "WAN2_2_TI2V"
    if not is_wan:
        problems.append("no blocks.0.cross_attn.norm_k.weight: sd.cpp would not detect a Wan model")

    # src/wan.hpp WanRunner: the block count decides everything.
    blocks = vace_blocks = 0
    model_type, flf = "t2v", False
    for n in t:
        if not n.startswith(p):
            continue
        rest = n[len(p):]
        pos = rest.find("vace_blocks.")
        if pos >= 0:
            items = rest[pos:].split(".")
            vace_blocks = max(vace_blocks, _atoi(items[1]) + 1) if len(items) > 1 else vace_blocks
            continue
        pos = rest.find("blocks.")
        if pos >= 0:
            items = rest[pos:].split(".")
            blocks = max(blocks, _atoi(items[1]) + 1) if len(items) > 1 else blocks
            continue
        if "img_emb" in rest:
            model_type = "i2v"
        if "img_emb.emb_pos" in rest:
            flf = True

    name: str | None = None
    if blocks == 30:
        if version == "WAN2_2_TI2V":
            name = "Wan2.2-TI2V-5B"
        elif vace_blocks > 0:
            name = "Wan2.1-VACE-1.3B"
        elif model_type == "i2v":
            name = "Wan2.1-I2V-1.3B"
        else:
            name = "Wan2.1-T2V-1.3B"
    elif blocks == 40:
        if model_type == "t2v":
            if version == "WAN2_2_I2V":
                name = "Wan2.2-I2V-14B"
            else:
                name = "Wan2.x-VACE-14B" if vace_blocks > 0 else "Wan2.x-T2V-14B"
        else:
            name = "Wan2.1-FLF2V-14B" if flf else "Wan2.1-I2V-14B"
    else:
        problems.append(f"{blocks} transformer blocks: sd.cpp only runs Wan DiTs with 30 (1.3B, TI2V-5B) "
                        "or 40 (14B) blocks and aborts the whole process (GGML_ABORT) on any other count")

    # What the file's shapes say, to catch what sd.cpp would reject at load time.
    def dim0(key: str, axis: int = 0) -> int | None:
        info = t.get(p + key)
        return info.shape[axis] if info is not None and len(info.shape) > axis else None

    file_dim = dim0("text_embedding.0.weight") or dim0("patch_embedding.weight")
    file_ffn = dim0("blocks.0.ffn.0.weight")
    file_text = dim0("text_embedding.0.weight", 1)
    file_freq = dim0("time_embedding.0.weight", 1)
    head = dim0("head.head.weight")
    file_out = head // 4 if head is not None else None
    file_in = None
    patch_size: tuple[int, int, int] | None = None
    if patch is not None and len(patch.shape) == 5:
        file_in = patch.shape[1]
        patch_size = (patch.shape[2], patch.shape[3], patch.shape[4])
    elif patch is not None and file_dim:
        file_in = patch_channels // file_dim

    values = dict(dim=file_dim, ffn_dim=file_ffn, num_heads=file_dim // 128 if file_dim else None,
                  in_channels=file_in, out_channels=file_out)
    if name is not None:
        expected = _SDCPP_DIT[name]
        for key, want in expected.items():
            got = values.get(key)
            if key != "num_heads" and got is not None and got != want:
                problems.append(f"{key} is {got} in the file but sd.cpp builds {name} with {want}: "
                                "loading would fail with a shape mismatch")
        values = dict(expected)
        if file_text not in (None, 4096):
            problems.append(f"text_embedding takes {file_text} features; sd.cpp's Wan takes 4096 (umt5-xxl)")
        missing = [i for i in range(blocks) if p + f"blocks.{i}.self_attn.q.weight" not in t]
        if missing:
            problems.append(f"blocks {missing[:5]}{'...' if len(missing) > 5 else ''} are missing "
                            f"(sd.cpp expects blocks 0..{blocks - 1})")
    families = _FAMILIES_OF.get(name, ()) if name else ()
    return ModelKind(
        "dit", name=name, family=families[0] if families else None, families=families, prefix=p,
        components=components, blocks=blocks, patch_size=patch_size or (1, 2, 2),
        text_dim=file_text, freq_dim=file_freq, has_image_embedding=has_img_emb,
        vace_blocks=vace_blocks, problems=tuple(problems), **values)


def _identify_vae(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in ("", "vae.", "first_stage_model."):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects Wan VAE names with no prefix or 'vae.'")
    conv1 = t.get(p + "decoder.conv1.weight")
    z_dim = conv1.shape[1] if conv1 is not None and len(conv1.shape) == 5 else None
    has_encoder = p + "encoder.conv1.weight" in t and p + "conv1.weight" in t
    name = family = None
    if z_dim == 16:
        name, family = "Wan2.1-VAE", "wan2.1-vae"
    elif z_dim == 48:
        name, family = "Wan2.2-VAE", "wan2.2-vae"
    else:
        problems.append(f"decoder.conv1.weight is {list(conv1.shape) if conv1 else 'missing'}; a Wan VAE's "
                        "is [out, 16 (Wan2.1) or 48 (Wan2.2), 3, 3, 3]")
    if p + "decoder.head.2.weight" not in t:
        problems.append("decoder.head.2.weight is missing")
    return ModelKind("vae", name=name, family=family, families=(family,) if family else (), prefix=p,
                     components=components, z_dim=z_dim, has_encoder=has_encoder, problems=tuple(problems))


def _count_layers(names: Iterator[str] | list[str], stem: str) -> int:
    n = 0
    for name in names:
        if name.startswith(stem):
            n = max(n, _atoi(name[len(stem):]) + 1)
    return n


def _identify_text_encoder(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in ("", "text_encoders.t5xxl.transformer."):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects T5 names with no prefix "
                        "or 'text_encoders.t5xxl.transformer.'")
    gguf_names = p + "enc.blk.0.attn_q.weight" in t
    if gguf_names:
        emb, blk, ffn_key = t.get(p + "token_embd.weight"), p + "enc.blk.", "ffn_up.weight"
        rel = lambda i: p + f"enc.blk.{i}.attn_rel_b.weight"  # noqa: E731
    else:
        emb, blk, ffn_key = t.get(p + "shared.weight"), p + "encoder.block.", "layer.1.DenseReluDense.wi_1.weight"
        rel = lambda i: p + f"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"  # noqa: E731
    layers = _count_layers(t, blk)
    vocab = emb.shape[0] if emb is not None and len(emb.shape) == 2 else None
    dim = emb.shape[1] if emb is not None and len(emb.shape) == 2 else None
    ffn = t.get(f"{blk}0.{ffn_key}")
    rel0 = t.get(rel(0))
    heads = rel0.shape[1] if rel0 is not None and len(rel0.shape) == 2 else None
    per_block_bias = layers > 1 and all(rel(i) in t for i in range(layers))
    if emb is None:
        problems.append("the token embedding (shared.weight / token_embd.weight) is missing")
    name = family = None
    if (vocab, dim, layers, heads) == (_UMT5_VOCAB, 4096, 24, 64) and per_block_bias:
        name, family = "umt5-xxl", "umt5-xxl"
    elif vocab == 32128:
        problems.append("this is T5 (vocab 32128); sd.cpp's Wan conditioner is umt5-xxl "
                        f"(vocab {_UMT5_VOCAB}, a relative attention bias in every block)")
    else:
        problems.append(f"not umt5-xxl: vocab {vocab}, dim {dim}, {layers} layers, {heads} heads"
                        f"{'' if per_block_bias else ', no relative attention bias in every block'}")
    return ModelKind("text_encoder", name=name, family=family, families=(family,) if family else (), prefix=p,
                     components=components, blocks=layers, dim=dim,
                     ffn_dim=ffn.shape[0] if ffn is not None and ffn.shape else None, num_heads=heads,
                     vocab_size=vocab, problems=tuple(problems))


def _identify_clip_vision(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in ("", "cond_stage_model.transformer."):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects Hugging Face CLIP names with no prefix")
    layers = _count_layers(t, p + "vision_model.encoder.layers.")
    patch = t.get(p + "vision_model.embeddings.patch_embedding.weight")
    hidden = patch.shape[0] if patch is not None and patch.shape else None
    fc1 = t.get(p + "vision_model.encoder.layers.0.mlp.fc1.weight")
    ffn = fc1.shape[0] if fc1 is not None and fc1.shape else None
    name = family = None
    if (hidden, layers, ffn) == (1280, 32, 5120):
        name, family = "CLIP-ViT-H-14", "clip-vision-h"
    else:
        problems.append(f"not CLIP ViT-H/14 (hidden {hidden}, {layers} layers, ffn {ffn}); sd.cpp's Wan "
                        "I2V uses ViT-H/14 (1280, 32 layers, 5120)")
    if p + "visual_projection.weight" not in t:
        problems.append("visual_projection.weight is missing (sd.cpp's CLIP vision model needs it)")
    return ModelKind("clip_vision", name=name, family=family, families=(family,) if family else (), prefix=p,
                     components=components, blocks=layers, dim=hidden, ffn_dim=ffn,
                     num_heads=16 if name else None, problems=tuple(problems))
