"""Durations and byte sizes as people write them in configuration files.

Parsing is strict on purpose: a config value we misread (a size of "512m" taken as
megabits, a "-5s" timeout) causes surprises hours later, so anything ambiguous is
rejected with a message that shows how to write it instead.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Union

Number = Union[int, float]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# One or more "<number><unit>" parts, so "1h30m" and what format_duration prints
# ("2m05s") both parse back.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)\s*")
_DURATION_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)\s*(?:ms|s|m|h|d)\s*)+")
_BARE_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_HINT = "a duration such as 30, '500ms', '30s', '5m', '1h' or '2d'"

_DECIMAL = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "pb": 1000**5}
_BINARY = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5}
_SIZE_UNITS = {"": 1, "b": 1, **_DECIMAL, **_BINARY}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)")
_SIZE_HINT = "a size such as 1048576, '100KB', '512MiB' or '1GB'"

_FORMAT_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def parse_duration(value: object) -> float:
    """Return a duration in seconds from a number of seconds or a string like '30s'."""
    # bool is an int subclass; "timeout: yes" is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected {_DURATION_HINT}, got {_shown(value)}")
    if isinstance(value, str):
        return _parse_duration_text(value)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite duration, got {value}")
    if value < 0:
        raise ValueError(f"a duration cannot be negative, got {value}")
    return float(value)


def _parse_duration_text(text: str) -> float:
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {text!r}")
    if _BARE_NUMBER.fullmatch(stripped):
        return float(stripped)
    if not _DURATION_WHOLE.fullmatch(stripped):
        raise ValueError(f"expected {_DURATION_HINT}, got {text!r}")
    return sum(
        float(number) * _DURATION_UNITS[unit]
        for number, unit in _DURATION_PART.findall(stripped)
    )


def parse_size(value: object) -> int:
    """Return a size in bytes from an integer or a string like '512MiB' or '1GB'.

    KB/MB/GB/TB/PB are powers of 1000 and KiB/MiB/GiB/TiB/PiB powers of 1024, as in
    IEC 80000-13. Single-letter units ('512M') are refused because tools disagree on
    them (docker reads 1024-based, others 1000-based).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected {_SIZE_HINT}, got {_shown(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    return _parse_size_text(value)


def _parse_size_text(text: str) -> int:
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"a size cannot be negative, got {text!r}")
    match = _SIZE.fullmatch(stripped)
    if match is None:
        raise ValueError(f"expected {_SIZE_HINT}, got {text!r}")
    number_text, unit_text = match.groups()
    unit = unit_text.lower()
    if unit not in _SIZE_UNITS:
        raise ValueError(
            f"unknown size unit {unit_text!r} in {text!r}; use B, KB, MB, GB, TB "
            "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    try:
        number = Decimal(number_text)
    except InvalidOperation:  # pragma: no cover - the regex only lets digits through
        raise ValueError(f"expected {_SIZE_HINT}, got {text!r}") from None
    multiplier = _SIZE_UNITS[unit]
    if multiplier == 1 and number != number.to_integral_value():
        raise ValueError(f"a number of bytes must be whole, got {text!r}")
    # Fractions of a byte left by "1.1KiB" do not matter to any limit; round down.
    return int(number * multiplier)


def format_duration(seconds: Number) -> str:
    """Compact, fixed-precision form for status columns: '3s', '2m05s', '1h02m', '3d04h'."""
    # Clock steps can make "now - started" slightly negative; a status line must not fail.
    seconds = max(0.0, float(seconds))
    if 0 < seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_size(n: int) -> str:
    """Binary-unit form with one decimal: '512B', '1.5KiB', '12.3MiB'."""
    if isinstance(n, bool) or n < 0:
        raise ValueError(f"a size cannot be negative, got {n}")
    if n < 1024:
        return f"{n}B"
    value = float(n)
    for unit in _FORMAT_SIZE_UNITS:
        value /= 1024
        # Compare the rounded value so 1048575 bytes prints as 1.0MiB, not 1024.0KiB.
        if round(value, 1) < 1024 or unit == _FORMAT_SIZE_UNITS[-1]:
            return f"{value:.1f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover
