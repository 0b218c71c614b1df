"""The Prometheus text exposition format, version 0.0.4, written by hand.

It is a small line format (HELP, TYPE, then one `name{label="value"} number` per sample),
and writing it ourselves keeps the daemon free of a runtime dependency for it. The tests
read everything this writes back with prometheus_client's parser, the one Prometheus's
own Python client ships.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: its samples share a name (histograms add suffixes to it)."""

    name: str
    kind: str  # counter | gauge | histogram | untyped
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, labels: Labels, value: float, suffix: str = "") -> None:
        self.samples.append((self.name + suffix, labels, value))

    def add_histogram(self, labels: Labels, bounds: Sequence[float],
                      cumulative: Sequence[int], total: float) -> None:
        """`cumulative`: one count per bound, then +Inf's (which is the count)."""
        for bound, count in zip(bounds, cumulative):
            self.add(labels + (("le", format_value(bound)),), count, "_bucket")
        self.add(labels + (("le", "+Inf"),), cumulative[-1], "_bucket")
        self.add(labels, total, "_sum")
        self.add(labels, cumulative[-1], "_count")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    """Integers without a fraction (counters stay exact past 2**53), floats as Python's
    shortest repr, and the spellings the format gives the special values."""
    if isinstance(value, int):  # bool included: 1 or 0
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"'
                          for name, value in labels) + "}"


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        lines.extend(f"{name}{_labels(labels)} {format_value(value)}"
                     for name, labels, value in family.samples)
    return "\n".join(lines) + "\n"
