"""Byte counts: parsing what users write ("4GiB", "0xfffffffc") and formatting reports.

One place for both, so the command line, the pre-flight and the device report read and
write sizes the same way.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["GiB", "MiB", "MAX_BYTES", "format_bytes", "format_exact_bytes", "format_gib", "parse_bytes"]

MiB = 2**20
GiB = 2**30
# ggml sizes are size_t: anything larger is a typo, not a device
MAX_BYTES = 2**64 - 1

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_DECIMAL = re.compile(r"(\d+)(?:\.(\d+))?\s*([a-zA-Z]*)")
# digits beyond these cannot name a size below MAX_BYTES (20 digits) or a whole byte (a TiB
# has 40 binary places): longer text is refused before int() sees it
_MAX_WHOLE_DIGITS = 20
_MAX_FRACTION_DIGITS = 64


def parse_bytes(text: str | int) -> int:
    """Bytes from ``4GiB``, ``4096MiB``, ``4.5GB``, ``0xfffffffc`` or plain bytes.

    Decimal units (k, M, G, T, optionally with B) are powers of 1000, binary ones (KiB,
    MiB, GiB, TiB) powers of 1024; case is ignored and ``_`` separates digits. The result
    must be a positive whole number of bytes, at most ``MAX_BYTES``; anything else raises
    ValueError naming the text (TypeError for what is neither a str nor an int).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return _checked(text, text)
    if not isinstance(text, str):
        raise TypeError(f"a size must be a str or int, got {type(text).__name__}")
    s = text.strip().replace("_", "")
    if _HEX.fullmatch(s):
        return _checked(int(s, 16), text)
    m = _DECIMAL.fullmatch(s)
    if not m or m.group(3).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 4GiB, 4096MiB, 4.5GB, 0xfffffffc or bytes)")
    whole, fraction, unit = m.group(1).lstrip("0"), (m.group(2) or "").rstrip("0"), _UNITS[m.group(3).lower()]
    if len(whole) > _MAX_WHOLE_DIGITS:
        raise ValueError(f"size {text!r} is more than {MAX_BYTES:,} bytes")
    if len(fraction) > _MAX_FRACTION_DIGITS:
        raise ValueError(f"size {text!r} is not a whole number of bytes")
    value = Fraction(int(whole or "0") * 10 ** len(fraction) + int(fraction or "0"), 10 ** len(fraction)) * unit
    if value.denominator != 1:
        raise ValueError(f"size {text!r} is not a whole number of bytes")
    return _checked(int(value), text)


def _checked(value: int, text: str | int) -> int:
    if value <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    if value > MAX_BYTES:
        # an int too long for repr() (Python refuses > 4300 digits) is named by its size
        shown = repr(text) if isinstance(text, str) or value.bit_length() < 10_000 else \
            f"of {value.bit_length()} bits"
        raise ValueError(f"size {shown} is more than {MAX_BYTES:,} bytes")
    return value


def format_bytes(n: int | None) -> str:
    """A size for a report table: ``1.27 GiB`` from 1 GiB on, else ``12.5 MiB``; None is ``-``."""
    if n is None:
        return "-"
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / MiB:.1f} MiB"


def format_gib(n: int | None) -> str:
    """A memory size in GiB (``95.50 GiB``); None (unknown) is ``?``."""
    return "?" if n is None else f"{n / GiB:.2f} GiB"


def format_exact_bytes(n: int | None) -> str:
    """A limit to the byte, with GiB beside it (``4,294,967,292 B (4.00 GiB)``); None is ``n/a``."""
    return "n/a" if n is None else f"{n:,} B ({n / GiB:.2f} GiB)"
