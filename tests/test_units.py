"""wanpy.units: byte counts parsed in every spelling users write, absurd ones refused by name."""

from __future__ import annotations

import pytest

from wanpy.units import MAX_BYTES, format_bytes, format_exact_bytes, format_gib, parse_bytes


def test_sizes_parse_in_every_spelling():
    assert parse_bytes("4GiB") == parse_bytes("4096MiB") == parse_bytes(4 * 2**30) == 2**32
    assert parse_bytes("0xfffffffc") == 2**32 - 4
    assert parse_bytes("4.5GB") == 4_500_000_000
    for bad in ("", "4 apples", "-1", "0", "1.5B"):
        with pytest.raises(ValueError):
            parse_bytes(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("1", 1), ("1b", 1), ("1k", 1000), ("2 kB", 2000), ("3M", 3_000_000), ("1g", 10**9), ("1TB", 10**12),
    ("1KiB", 1024), ("1.5GiB", 3 * 2**29), ("0.5 tib", 2**39), (" 4GiB ", 2**32), ("1_000_000", 10**6),
    ("0X10", 16), ("00012", 12), ("4.50GB", 4_500_000_000), (MAX_BYTES, MAX_BYTES),
    (hex(MAX_BYTES), MAX_BYTES), (str(MAX_BYTES), MAX_BYTES),
])
def test_what_is_accepted(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", [
    "1" * 400, "1" * 5000 + "GiB", "1e400GiB", "inf", "nan", "-inf", "1e3", "1e400", "0x" + "f" * 400,
    str(MAX_BYTES + 1), MAX_BYTES + 1, 10**400, "0." + "1" * 5000 + "GiB", "18446744073709551616",
    "16777216TiB", "1.5", "0.1GiB", "0x0", "0.0GiB", "GiB", ".5GiB", "5.GiB", "4 GiBs",
])
def test_absurd_sizes_raise_value_error_naming_the_text(text):
    with pytest.raises(ValueError) as info:
        parse_bytes(text)
    shown = repr(text) if isinstance(text, str) else str(text)
    assert shown[:40] in str(info.value)


def test_an_int_too_long_to_print_is_refused_by_its_size():
    with pytest.raises(ValueError, match="size of 33220 bits is more than"):
        parse_bytes(10**10000)


@pytest.mark.parametrize("value", [True, 4.0, None, b"4GiB", [4]])
def test_what_is_neither_text_nor_an_int_is_a_type_error(value):
    with pytest.raises(TypeError, match="a size must be a str or int"):
        parse_bytes(value)


def test_formatting():
    assert format_bytes(None) == "-"
    assert format_bytes(3 * 2**29) == "1.50 GiB"
    assert format_bytes(2**30 - 1) == "1024.0 MiB"
    assert format_bytes(0) == "0.0 MiB"
    assert format_gib(None) == "?" and format_gib(96 * 2**30) == "96.00 GiB"
    assert format_exact_bytes(None) == "n/a"
    assert format_exact_bytes(0xFFFFFFFC) == "4,294,967,292 B (4.00 GiB)"
