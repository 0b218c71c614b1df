"""Reusable value parsers for the schema tables.

A parser takes a FieldInput (the YAML value plus where it came from) and returns the
normalised value, or raises Invalid with one message per bad spot. Parsers never
stop at the first bad list item, so one run of the checker shows every mistake.
"""

from __future__ import annotations

import difflib
import keyword
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

from .. import units
from .control import resolve_path  # noqa: F401 - part of this module's API
from .problems import KeyPath
from .yamlnodes import YamlDocument


class Invalid(Exception):
    """A parser's verdict: (path relative to the key, message) for each bad spot."""

    def __init__(self, message: str = "", at: KeyPath = (),
                 errors: list[tuple[KeyPath, str]] | None = None) -> None:
        self.errors: list[tuple[KeyPath, str]] = errors if errors is not None else [(at, message)]
        super().__init__("; ".join(message for _, message in self.errors))


@dataclass(frozen=True)
class FieldInput:
    value: Any
    path: KeyPath  # where the value sits, for looking up how it was written
    doc: YamlDocument
    base_dir: str  # directory of the file the value is in; relative paths start here
    check_writable: bool = True  # whether the daemon's files must be creatable by us

    def raw(self) -> str | None:
        """The scalar as written, e.g. '0600' for a value YAML turned into 384."""
        return self.doc.raw.get(self.path)

    def item(self, value: Any, sub: KeyPath) -> FieldInput:
        return FieldInput(value, self.path + sub, self.doc, self.base_dir, self.check_writable)


Parser = Callable[[FieldInput], Any]


def describe(value: Any) -> str:
    """Show a bad value in YAML terms ('four', true, null, a list) for 'got ...'."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def show_duration(seconds: float) -> str:
    """Seconds the way a config file writes them, exactly: '45m', '1h30m', '100ms'."""
    millis = round(seconds * 1000)
    if abs(millis - seconds * 1000) > 1e-6:  # finer than a millisecond: no unit fits
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """'; did you mean 'workers'?' when a close candidate exists, else ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def is_dotted_name(text: str) -> bool:
    """'a.b.c' where every part is a Python identifier that is not a keyword."""
    parts = text.split(".")
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in parts)


# -- scalar parsers ------------------------------------------------------------------


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    # bool is an int subclass in Python; "workers: yes" must not mean 1.
    return _bounded("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool),
                    int, minimum, maximum)


def number(minimum: float | None = None, maximum: float | None = None) -> Parser:
    """An integer or decimal number (2, 1.5), for factors and fractions."""
    # bool is an int subclass; and .nan/.inf are valid YAML floats that no limit accepts.
    return _bounded("a number", lambda v: isinstance(v, (int, float))
                    and not isinstance(v, bool) and math.isfinite(v),
                    float, minimum, maximum)


def _bounded(kind: str, accepts: Callable[[Any], bool], convert: Callable[[Any], Any],
             minimum: float | None, maximum: float | None) -> Parser:
    if minimum is not None and maximum is not None:
        wanted = f"{kind} between {_plain(minimum)} and {_plain(maximum)}"
    elif minimum is not None:
        wanted = f"{kind} >= {_plain(minimum)}"
    else:
        wanted = kind

    def parse(field: FieldInput) -> Any:
        value = field.value
        ok = accepts(value)
        if ok and minimum is not None and value < minimum:
            ok = False
        if ok and maximum is not None and value > maximum:
            ok = False
        if not ok:
            raise Invalid(f"expected {wanted}, got {describe(value)}")
        return convert(value)

    return parse


def _plain(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def boolean(field: FieldInput) -> bool:
    if not isinstance(field.value, bool):
        raise Invalid(f"expected true or false, got {describe(field.value)}")
    return field.value


def text(what: str = "a non-empty string") -> Callable[[FieldInput], str]:
    def parse(field: FieldInput) -> str:
        value = field.value
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected {what}, got {describe(value)}")
        return value

    return parse


def choice(*options: str) -> Parser:
    listed = ", ".join(options)

    def parse(field: FieldInput) -> str:
        if field.value not in options:
            hint = did_you_mean(field.value, options) if isinstance(field.value, str) else ""
            raise Invalid(f"expected one of {listed}, got {describe(field.value)}{hint}")
        return str(field.value)

    return parse


def duration(positive: bool = False) -> Parser:
    def parse(field: FieldInput) -> float:
        try:
            seconds = units.parse_duration(field.value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and seconds <= 0:
            raise Invalid(f"expected a duration > 0, got {describe(field.value)}")
        return seconds

    return parse


def size(minimum: int = 0) -> Parser:
    def parse(field: FieldInput) -> int:
        try:
            nbytes = units.parse_size(field.value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if nbytes < minimum:
            raise Invalid(f"expected a size of at least {minimum} bytes, got {describe(field.value)}")
        return nbytes

    return parse


def dotted_name(field: FieldInput) -> str:
    value = field.value
    if not isinstance(value, str) or not is_dotted_name(value):
        raise Invalid(f"expected a dotted module name such as 'myapp.models', got {describe(value)}")
    return value


# -- collections ---------------------------------------------------------------------


def list_of(item: Parser, what: str) -> Parser:
    """A YAML list parsed item by item; null (all items commented out) means empty."""

    def parse(field: FieldInput) -> tuple[Any, ...]:
        if field.value is None:
            return ()
        if not isinstance(field.value, list):
            raise Invalid(f"expected a list of {what}, got {describe(field.value)}")
        results: list[Any] = []
        errors: list[tuple[KeyPath, str]] = []
        for index, value in enumerate(field.value):
            try:
                results.append(item(field.item(value, (index,))))
            except Invalid as exc:
                errors.extend(((index,) + at, message) for at, message in exc.errors)
        if errors:
            raise Invalid(errors=errors)
        return tuple(results)

    return parse


# -- filesystem ----------------------------------------------------------------------


def path_text(field: FieldInput) -> str:
    if not isinstance(field.value, str) or not field.value.strip():
        raise Invalid(f"expected a path, got {describe(field.value)}")
    if "\0" in field.value:
        raise Invalid("a path cannot contain a NUL character")
    return resolve_path(field.value, field.base_dir)


def existing_dir(field: FieldInput) -> str:
    path = path_text(field)
    if not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        raise Invalid(f"directory {path} {what}")
    return path


def creatable_dir_problem(directory: str) -> str | None:
    """Why `directory` can neither be used nor created by us, or None if it can.

    We only look, never create: checking a config must not leave directories behind.
    """
    probe = directory
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"cannot create directory {directory}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == directory:
            return f"directory {directory} is not writable"
        return f"cannot create directory {directory}: {probe} is not writable"
    return None


def writable_dir(field: FieldInput) -> str:
    """A directory we write files into (logs): it exists and is writable, or can be made."""
    path = path_text(field)
    problem = creatable_dir_problem(path) if field.check_writable else None
    if problem:
        raise Invalid(problem)
    return path


def file_in_writable_dir(field: FieldInput) -> str:
    """A file we create (pidfile, socket, log): its directory must be usable or creatable."""
    path = path_text(field)
    problem = creatable_dir_problem(os.path.dirname(path)) if field.check_writable else None
    if problem:
        raise Invalid(problem)
    return path
