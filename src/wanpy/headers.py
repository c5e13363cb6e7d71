"""Header-only reading of GGUF and safetensors model files.

``read_header`` parses a file's header (tensor names, shapes, types, offsets, metadata)
without touching the tensor data, so it takes milliseconds even on a 14B model, and it
checks everything the header claims against the file: a truncated, corrupt or lying
header raises ``ModelFileError`` saying which file and what is wrong. What sd.cpp makes
of a header is ``wanpy.identify``'s concern.

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
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

from wanpy.errors import ModelFileError

__all__ = ["GGML_TYPES", "GgmlType", "ModelHeader", "TensorInfo", "read_header", "read_header_cached"]


class GgmlType(NamedTuple):
    """A ggml type: its name, elements per block and bytes per block."""

    name: str
    block_size: int
    type_size: int


# ggml types as the pinned ggml (ggml/include/ggml.h) numbers them: id -> (name, block size,
# bytes per block); a NamedTuple, so (name, block, size) unpacking keeps working. Kept here
# (not imported from gguf-py) so reading a header imports nothing heavy.
GGML_TYPES: dict[int, GgmlType] = {k: GgmlType(*v) for k, v in {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36),
}.items()}

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

    def __init__(self, f: IO[bytes], path: str, file_size: int) -> None:
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

    metadata = _gguf_metadata(r, n_kv)
    alignment = metadata.get("general.alignment", _GGUF_DEFAULT_ALIGNMENT)
    seen: set[str] = set()
    infos = [_gguf_tensor_info(r, i, seen) for i in range(n_tensors)]

    data_offset = -(-r.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for info in infos:
        offset = data_offset + info.offset
        if offset + info.nbytes > r.file_size:
            raise r.error(f"tensor {info.name!r} ({info.dtype} {list(info.shape)}, {info.nbytes} bytes at offset "
                          f"{offset}) runs past the end of the file ({r.file_size} bytes): truncated or corrupt")
        tensors[info.name] = dataclasses.replace(info, offset=offset)
    _check_overlaps(r, tensors.values())
    return ModelHeader(r.path, "gguf", tensors, metadata, data_offset, r.file_size)


def _gguf_metadata(r: _Reader, n_kv: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
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
    return metadata


def _gguf_tensor_info(r: _Reader, i: int, seen: set[str]) -> TensorInfo:
    """Tensor #i's entry (``seen``: the names before it); its offset is relative to the data
    section, which starts after the last entry."""
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
    return TensorInfo(name, tuple(reversed(ne)), tname, rel, nbytes)


def _check_overlaps(r: _Reader, tensors: Iterable[TensorInfo]) -> None:
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

    entries: list[TensorInfo] = []
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

# --- cached reading ---------------------------------------------------------------------------

def file_version(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """A file version's key for caches: path, size, mtime."""
    p = os.fspath(path)
    st = os.stat(p)
    return p, st.st_size, st.st_mtime_ns


def read_header_cached(path: str | os.PathLike[str]) -> ModelHeader:
    """``read_header(path)``, read once per version of the file (path, size, mtime). The
    header is shared between callers: do not modify it."""
    return header_of_version(*file_version(path))


@functools.lru_cache(maxsize=16)
def header_of_version(path: str, size: int, mtime_ns: int) -> ModelHeader:
    """``read_header(path)`` for one version of the file (see ``file_version``)."""
    return read_header(path)
