"""Streaming GGUF and safetensors writers for random-weight model files.

Tensors are generated and written one chunk at a time (memory stays at a few tens of
MB whatever the model size); quantized tensors are written as random blocks directly,
with each block's scale chosen so the values spread over U(-a, a). Values come from
PCG64 seeded by a stable hash of (seed, file, tensor name), taken through the bit
generator's raw output only, so the bytes are the same on every machine and NumPy
version. With ``sparse=True`` only the header is written and the data region is left
as a hole: a full-size file that uses (almost) no disk, for tests that read headers.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wanpy.headers import GGML_TYPES
from wanpy.layouts import TensorSpec

_TYPE_IDS = {name: type_id for type_id, (name, _, _) in GGML_TYPES.items()}
GGUF_ALIGNMENT = 32
_CHUNK_ELEMENTS = 1 << 22  # floats per chunk (even: two per 64-bit raw word)
_CHUNK_BLOCKS = 1 << 16  # quant blocks per chunk (a multiple of 8: whole 64-bit raw words)
_SAFETENSORS_TYPES = {"F32", "F16", "BF16"}


def tensor_nbytes(spec: TensorSpec) -> int:
    _, block, size = GGML_TYPES[_TYPE_IDS[spec.ggml_type]]
    n = spec.nelements
    row = spec.shape[-1] if spec.shape else 1
    if row % block:
        raise ValueError(f"{spec.name}: rows of {row} elements cannot be stored as {spec.ggml_type} "
                         f"(blocks of {block})")
    return n // block * size


def _bit_generator(seed: int, seed_key: str, name: str) -> np.random.PCG64:
    digest = hashlib.sha256(f"wanpy.testing\0{seed}\0{seed_key}\0{name}".encode()).digest()
    return np.random.PCG64(int.from_bytes(digest[:16], "little"))


def _f16(x: float) -> bytes:
    return np.array(x, dtype="<f2").tobytes()


def _block_template(ggml_type: str, a: float) -> list[tuple[int, bytes]]:
    """(byte offset, bytes) to set in every block so its values spread over about U(-a, a)."""
    k_scales = bytes([1] * 8 + [0x11] * 4)  # Q4_K/Q5_K: every 6-bit scale and min = 1
    templates = {
        "Q4_0": lambda: [(0, _f16(a / 7))],  # (q - 8) * d, q in 1..15 (see tensor_chunks)
        "Q4_1": lambda: [(0, _f16(2 * a / 15) + _f16(-a))],  # q * d + m
        "Q5_0": lambda: [(0, _f16(a / 16))],  # (q - 16) * d, q in 0..31
        "Q5_1": lambda: [(0, _f16(2 * a / 31) + _f16(-a))],
        "Q8_0": lambda: [(0, _f16(a / 128))],  # q * d, q in -128..127
        "Q4_K": lambda: [(0, _f16(2 * a / 15) + _f16(a) + k_scales)],  # d * q - dmin
        "Q5_K": lambda: [(0, _f16(2 * a / 31) + _f16(a) + k_scales)],
        "Q6_K": lambda: [(192, bytes([1] * 16) + _f16(a / 32))],  # d * (q - 32), scales = 1
    }
    if ggml_type not in templates:
        raise ValueError(f"the test kit cannot write random {ggml_type} blocks; "
                         f"it writes {', '.join(['F32', 'F16', 'BF16', *templates])}")
    return templates[ggml_type]()


def _float_chunk(bg: np.random.PCG64, n: int, a: float) -> np.ndarray:
    raw = bg.random_raw((n + 1) // 2).view("<u4")[:n]
    u = (raw >> np.uint32(8)).astype(np.float32)
    u *= np.float32(2 * a / (1 << 24))
    u -= np.float32(a)
    return u


def _encode_floats(values: np.ndarray, ggml_type: str) -> np.ndarray:
    if ggml_type == "F32":
        return values.astype("<f4", copy=False)
    if ggml_type == "F16":
        return values.astype("<f2")
    bits = values.astype("<f4", copy=False).view("<u4")
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype("<u2")


def tensor_chunks(spec: TensorSpec, seed: int, seed_key: str) -> Iterator[memoryview]:
    """The tensor's bytes, a chunk at a time."""
    n = spec.nelements
    if spec.ggml_type in ("F32", "F16", "BF16"):
        if spec.init in ("ones", "zeros"):
            value = 1.0 if spec.init == "ones" else 0.0
            for start in range(0, n, _CHUNK_ELEMENTS):
                k = min(_CHUNK_ELEMENTS, n - start)
                yield _encode_floats(np.full(k, value, np.float32), spec.ggml_type).data.cast("B")
            return
        bg = _bit_generator(seed, seed_key, spec.name)
        for start in range(0, n, _CHUNK_ELEMENTS):
            k = min(_CHUNK_ELEMENTS, n - start)
            yield _encode_floats(_float_chunk(bg, k, spec.scale), spec.ggml_type).data.cast("B")
        return
    if spec.init != "uniform":
        raise ValueError(f"{spec.name}: {spec.init} values are only written as F32/F16/BF16")
    _, block, size = GGML_TYPES[_TYPE_IDS[spec.ggml_type]]
    template = [(off, np.frombuffer(b, np.uint8)) for off, b in _block_template(spec.ggml_type, spec.scale)]
    bg = _bit_generator(seed, seed_key, spec.name)
    n_blocks = n // block
    for start in range(0, n_blocks, _CHUNK_BLOCKS):
        k = min(_CHUNK_BLOCKS, n_blocks - start)
        data = bg.random_raw((k * size + 7) // 8).view(np.uint8)[: k * size].reshape(k, size)
        if spec.ggml_type == "Q4_0":
            # nibble 0 (value -8d) becomes 8 (value 0): values symmetric in -7d..7d, mean 0
            fix = ((data & 0x0F) == 0).view(np.uint8) << 3
            fix |= ((data & 0xF0) == 0).view(np.uint8) << 7
            data |= fix
        for off, values in template:
            data[:, off:off + len(values)] = values
        yield data.data.cast("B")


# --- GGUF -----------------------------------------------------------------------------------

def _gguf_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _gguf_kv(key: str, value: Any) -> bytes:
    if isinstance(value, bool):
        body = struct.pack("<I?", 7, value)
    elif isinstance(value, int):
        if 0 <= value < 2**32:
            body = struct.pack("<II", 4, value)
        elif 0 <= value < 2**64:
            body = struct.pack("<IQ", 10, value)
        else:
            body = struct.pack("<Iq", 11, value)
    elif isinstance(value, float):
        body = struct.pack("<If", 6, value)
    elif isinstance(value, str):
        body = struct.pack("<I", 8) + _gguf_str(value)
    else:
        raise TypeError(f"GGUF metadata {key!r}: cannot write a {type(value).__name__}")
    return _gguf_str(key) + body


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def gguf_plan(specs: Sequence[TensorSpec], metadata: dict[str, Any]) -> tuple[bytes, list[int], int]:
    """(header bytes padded to the data start, each tensor's data offset, total file size)."""
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(specs), len(metadata))]
    parts += [_gguf_kv(k, v) for k, v in metadata.items()]
    offsets, offset = [], 0
    for s in specs:
        ne = tuple(reversed(s.shape))
        parts.append(_gguf_str(s.name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, _TYPE_IDS[s.ggml_type], offset))
        offsets.append(offset)
        offset += _pad(tensor_nbytes(s), GGUF_ALIGNMENT)
    header = b"".join(parts)
    header += bytes(_pad(len(header), GGUF_ALIGNMENT) - len(header))
    return header, offsets, len(header) + offset


def safetensors_plan(specs: Sequence[TensorSpec], metadata: dict[str, str]) -> tuple[bytes, int]:
    """(the 8-byte length + JSON header, total file size)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for s in specs:
        if s.ggml_type not in _SAFETENSORS_TYPES:
            raise ValueError(f"{s.name}: safetensors cannot hold {s.ggml_type}; use GGUF for quantized types")
        n = tensor_nbytes(s)
        header[s.name] = {"dtype": s.ggml_type, "shape": list(s.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (_pad(len(raw), 8) - len(raw))
    return struct.pack("<Q", len(raw)) + raw, 8 + len(raw) + offset


def planned_size(specs: Sequence[TensorSpec], fmt: str, metadata: dict[str, Any]) -> int:
    if fmt == "gguf":
        return gguf_plan(specs, metadata)[2]
    return safetensors_plan(specs, metadata)[1]


def write_file(path: str | os.PathLike[str], specs: Sequence[TensorSpec], fmt: str, metadata: dict[str, Any], *,
               seed: int, seed_key: str, sparse: bool) -> int:
    """Write the file atomically (a temporary file renamed into place); returns its size."""
    path = Path(path)
    if fmt == "gguf":
        header, _, total = gguf_plan(specs, metadata)
        alignment = GGUF_ALIGNMENT
    elif fmt == "safetensors":
        header, total = safetensors_plan(specs, metadata)
        alignment = 1
    else:
        raise ValueError(f"unknown format {fmt!r}; known: 'gguf', 'safetensors'")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            if not sparse:
                for s in specs:
                    written = 0
                    for chunk in tensor_chunks(s, seed, seed_key):
                        f.write(chunk)
                        written += len(chunk)
                    pad = _pad(written, alignment) - written
                    if pad:
                        f.write(bytes(pad))
            f.truncate(total)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return total
