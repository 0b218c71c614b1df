from __future__ import annotations

import math

import pytest

from qsupervisor.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    "value, seconds",
    [
        (0, 0.0),
        (10, 10.0),
        (2.5, 2.5),
        ("10", 10.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        (" 30 s ", 30.0),
        ("1h30m", 5400.0),
        ("2m05s", 125.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration_accepts_seconds_and_unit_strings(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


def test_parse_duration_returns_float_for_int_input() -> None:
    assert isinstance(parse_duration(3), float)


@pytest.mark.parametrize("value", [-1, -0.5, "-5s", "-10"])
def test_parse_duration_rejects_negative_values(value: object) -> None:
    with pytest.raises(ValueError, match="a duration cannot be negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_booleans(value: bool) -> None:
    with pytest.raises(ValueError, match=r"expected a duration such as .*, got (True|False)"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["", "abc", "5 minutes", "5M", "1h30", "s", "5s5", "+5s", "1e3"])
def test_parse_duration_rejects_garbage_strings_with_examples(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == (
        "expected a duration such as 30, '500ms', '30s', '5m', '1h' or '2d', got " + repr(value)
    )


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_parse_duration_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_parse_duration_rejects_infinite_and_nan(value: float) -> None:
    with pytest.raises(ValueError, match="expected a finite duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    "value, nbytes",
    [
        (0, 0),
        (1024, 1024),
        ("1024", 1024),
        ("10B", 10),
        ("100KB", 100_000),
        ("10KiB", 10_240),
        ("512MiB", 512 * 1024**2),
        ("1GB", 1_000_000_000),
        ("2GiB", 2 * 1024**3),
        ("1TB", 10**12),
        ("1TiB", 1024**4),
        ("1PB", 10**15),
        ("1.5KiB", 1536),
        ("1.1KiB", 1126),  # fractions of a byte are dropped
        ("512mib", 512 * 1024**2),
        (" 64 MB ", 64_000_000),
    ],
)
def test_parse_size_accepts_decimal_and_binary_units(value: object, nbytes: int) -> None:
    assert parse_size(value) == nbytes


@pytest.mark.parametrize("value", ["512M", "1G", "10k"])
def test_parse_size_rejects_ambiguous_single_letter_units(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == (
        f"unknown size unit {value[-1]!r} in {value!r}; use B, KB, MB, GB, TB (powers of 1000) "
        "or KiB, MiB, GiB, TiB (powers of 1024)"
    )


@pytest.mark.parametrize("value", [-1, "-1KB"])
def test_parse_size_rejects_negative_values(value: object) -> None:
    with pytest.raises(ValueError, match="a size cannot be negative"):
        parse_size(value)


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_parse_size_rejects_booleans_floats_and_other_types(value: object) -> None:
    with pytest.raises(ValueError, match=r"expected a size such as 1048576, '100KB', '512MiB' or '1GB', got"):
        parse_size(value)


@pytest.mark.parametrize("value", ["", "lots", "KB", "1 2MB", "1e6"])
def test_parse_size_rejects_garbage_strings(value: str) -> None:
    with pytest.raises(ValueError, match="expected a size such as|unknown size unit"):
        parse_size(value)


def test_parse_size_rejects_fractional_bytes() -> None:
    with pytest.raises(ValueError, match=r"a number of bytes must be whole, got '1.5'"):
        parse_size("1.5")


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (0.5, "500ms"),
        (3, "3s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (125, "2m05s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (3720, "1h02m"),
        (86399, "23h59m"),
        (86400, "1d00h"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
        (400 * 86400, "400d00h"),
    ],
)
def test_format_duration_is_compact_and_truncates(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_shows_negative_clock_skew_as_zero() -> None:
    assert format_duration(-2.5) == "0s"


@pytest.mark.parametrize("seconds", [3, 125, 3720])
def test_format_duration_output_parses_back(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "nbytes, text",
    [
        (0, "0B"),
        (512, "512B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (int(12.3 * 1024**2), "12.3MiB"),
        (1024**2 - 1, "1.0MiB"),  # rounds up into the next unit, never "1024.0KiB"
        (5 * 1024**3, "5.0GiB"),
        (2 * 1024**4, "2.0TiB"),
        (3 * 1024**6, "3072.0PiB"),
    ],
)
def test_format_size_uses_binary_units_with_one_decimal(nbytes: int, text: str) -> None:
    assert format_size(nbytes) == text


def test_format_size_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match="a size cannot be negative"):
        format_size(-1)
